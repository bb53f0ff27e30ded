/* One query's scan of 4-bit fast-scan IVF lists, in one call: the coarse term of every probed list,
the query's look-up tables quantised to bytes, the lists' codes summed 32 items at a time with
byte shuffles (AVX-512BW or AVX2, chosen at load time; portable C elsewhere), and the best `keep`
items by approximate score.

The codes are read in place from faiss's fast-scan inverted lists (IndexIVFPQFastScan, blocks of 32
items). In a block, sub-quantiser m holds 16 bytes from byte 16·m; byte b's low nibble is the code of
item b/2 (b even) or 8 + b/2 (b odd) and its high nibble that of the item 16 further. A table of 16
bytes per sub-quantiser, laid out the same way (m at 16·m), lines up with the codes lane by lane, so
one shuffle looks up 32 (AVX2) or 64 (AVX-512) codes. Table entries are at most 127, so two lookups
add up in a byte before they are widened to 16-bit lanes, and one scale for all the tables keeps a
whole code's sum below 32,768.

An item's approximate score is list coarse term + Σ_m (min_m + table_m[code_m] / scale). A block is
summed, compared with the score the kept items must beat (as a 16-bit threshold), and only the items
above it are scored in float and kept in a buffer of twice `keep`; a full buffer is cut to the best
`keep`, whose worst sets the bar. The lists are scanned nearest first, so the bar rises early.
*/
#include "_rows.h"
#include <time.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define X86 1
#else
#define X86 0
#endif

#define BLOCK 32
#define TOP 127.0f /* the highest table entry: two add up in a byte */
#define MAX_SUM 32000.0f /* a whole code's sum, rounding aside: below the signed 16-bit compare's limit */
#define MAX_SUBS 1024    /* sub-quantisers: rounding adds at most half a unit each, so sums stay below 32,767 */

/* Reorders items[0, n) so that the `keep` best come first (in no order); the rest follow. */
static void keep_best(Item *items, Py_ssize_t n, Py_ssize_t keep) {
    Py_ssize_t lo = 0, hi = n - 1;
    while (lo < hi) {
        Item pivot = items[lo + (hi - lo) / 2];
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (worse(&pivot, &items[i])) i++;
            while (worse(&items[j], &pivot)) j--;
            if (i <= j) {
                Item t = items[i];
                items[i++] = items[j];
                items[j--] = t;
            }
        }
        if (keep - 1 <= j) hi = j;
        else if (keep - 1 >= i) lo = i;
        else return;
    }
}

/* The worst of items[0, n). */
static Item worst_of(const Item *items, Py_ssize_t n) {
    Item w = items[0];
    for (Py_ssize_t i = 1; i < n; i++)
        if (worse(&items[i], &w)) w = items[i];
    return w;
}

/* Sums of one block's 32 codes (item order) into `sums`; returns the bit mask of items whose sum > thr. */
typedef uint32_t (*BlockSums)(const uint8_t *codes, const uint8_t *table, int subs, int16_t thr, int16_t *sums);

static uint32_t block_sums_c(const uint8_t *codes, const uint8_t *table, int subs, int16_t thr, int16_t *sums) {
    uint32_t mask = 0;
    for (int item = 0; item < BLOCK; item++) {
        int w = item & 15, at = w < 8 ? 2 * w : 2 * (w - 8) + 1, shift = item >= 16 ? 4 : 0, total = 0;
        for (int m = 0; m < subs; m++) total += table[16 * m + ((codes[16 * m + at] >> shift) & 15)];
        sums[item] = (int16_t)total;
        if (total > thr) mask |= 1u << item;
    }
    return mask;
}

#if X86
/* Four 16-bit accumulators of one 128-bit lane each (items 0-7, 8-15, 16-23, 24-31) to sums and a mask. */
__attribute__((target("avx2"))) static uint32_t finish(__m128i a, __m128i b, __m128i c, __m128i d, int16_t thr,
                                                        int16_t *sums) {
    _mm_storeu_si128((__m128i *)sums, a);
    _mm_storeu_si128((__m128i *)(sums + 8), b);
    _mm_storeu_si128((__m128i *)(sums + 16), c);
    _mm_storeu_si128((__m128i *)(sums + 24), d);
    __m128i t = _mm_set1_epi16(thr);
    uint32_t low = (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(_mm_cmpgt_epi16(a, t), _mm_cmpgt_epi16(b, t)));
    uint32_t high = (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(_mm_cmpgt_epi16(c, t), _mm_cmpgt_epi16(d, t)));
    return low | high << 16;
}

/* Low bytes accumulate with the high byte riding along (×256, modulo 2^16); the high bytes' own sum
   takes it back out at the end. */
__attribute__((target("avx2"))) static uint32_t block_sums_avx2(const uint8_t *codes, const uint8_t *table, int subs,
                                                                int16_t thr, int16_t *sums) {
    const __m256i nibble = _mm256_set1_epi8(15);
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
#define LOOKUP2(at, lo, hi)                                                                                  \
    do {                                                                                                    \
        __m256i x = _mm256_loadu_si256((const __m256i *)(codes + 16 * (at)));                               \
        __m256i t = _mm256_loadu_si256((const __m256i *)(table + 16 * (at)));                               \
        lo = _mm256_shuffle_epi8(t, _mm256_and_si256(x, nibble));                                           \
        hi = _mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble));                     \
    } while (0)
    int m = 0;
    for (; m + 4 <= subs; m += 4) { /* two registers' bytes added first: each at most 127 */
        __m256i lo, hi, lo2, hi2;
        LOOKUP2(m, lo, hi);
        LOOKUP2(m + 2, lo2, hi2);
        lo = _mm256_add_epi8(lo, lo2);
        hi = _mm256_add_epi8(hi, hi2);
        a = _mm256_add_epi16(a, lo);
        b = _mm256_add_epi16(b, _mm256_srli_epi16(lo, 8));
        c = _mm256_add_epi16(c, hi);
        d = _mm256_add_epi16(d, _mm256_srli_epi16(hi, 8));
    }
    if (m < subs) {
        __m256i lo, hi;
        LOOKUP2(m, lo, hi);
        a = _mm256_add_epi16(a, lo);
        b = _mm256_add_epi16(b, _mm256_srli_epi16(lo, 8));
        c = _mm256_add_epi16(c, hi);
        d = _mm256_add_epi16(d, _mm256_srli_epi16(hi, 8));
    }
    a = _mm256_sub_epi16(a, _mm256_slli_epi16(b, 8));
    c = _mm256_sub_epi16(c, _mm256_slli_epi16(d, 8));
#define LANES(v) _mm_add_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1))
    return finish(LANES(a), LANES(b), LANES(c), LANES(d), thr, sums);
}

__attribute__((target("avx512f,avx512bw,avx2"))) static uint32_t block_sums_avx512(const uint8_t *codes,
                                                                                  const uint8_t *table, int subs,
                                                                                  int16_t thr, int16_t *sums) {
    const __m512i nibble = _mm512_set1_epi8(15);
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
#define LOOKUP4(x, t, lo, hi)                                                                                \
    do {                                                                                                    \
        lo = _mm512_shuffle_epi8(t, _mm512_and_si512(x, nibble));                                           \
        hi = _mm512_shuffle_epi8(t, _mm512_and_si512(_mm512_srli_epi16(x, 4), nibble));                     \
    } while (0)
#define ADD4(lo, hi)                                                                                         \
    do {                                                                                                    \
        a = _mm512_add_epi16(a, lo);                                                                        \
        b = _mm512_add_epi16(b, _mm512_srli_epi16(lo, 8));                                                  \
        c = _mm512_add_epi16(c, hi);                                                                        \
        d = _mm512_add_epi16(d, _mm512_srli_epi16(hi, 8));                                                  \
    } while (0)
    int m = 0;
    for (; m + 8 <= subs; m += 8) { /* two registers' bytes added first: each at most 127 */
        __m512i lo, hi, lo2, hi2;
        LOOKUP4(_mm512_loadu_si512((const void *)(codes + 16 * m)), _mm512_loadu_si512((const void *)(table + 16 * m)),
                lo, hi);
        LOOKUP4(_mm512_loadu_si512((const void *)(codes + 16 * m + 64)),
                _mm512_loadu_si512((const void *)(table + 16 * m + 64)), lo2, hi2);
        ADD4(_mm512_add_epi8(lo, lo2), _mm512_add_epi8(hi, hi2));
    }
    if (m + 4 <= subs) {
        __m512i lo, hi;
        LOOKUP4(_mm512_loadu_si512((const void *)(codes + 16 * m)), _mm512_loadu_si512((const void *)(table + 16 * m)),
                lo, hi);
        ADD4(lo, hi);
        m += 4;
    }
    if (m < subs) { /* a last pair of sub-quantisers: half a register, the upper half's codes and table zero */
        __m512i lo, hi;
        LOOKUP4(_mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(codes + 16 * m))),
                _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(table + 16 * m))), lo, hi);
        ADD4(lo, hi);
    }
    a = _mm512_sub_epi16(a, _mm512_slli_epi16(b, 8));
    c = _mm512_sub_epi16(c, _mm512_slli_epi16(d, 8));
#define HALVES(v) _mm256_add_epi16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1))
    __m256i a2 = HALVES(a), b2 = HALVES(b), c2 = HALVES(c), d2 = HALVES(d);
    return finish(LANES(a2), LANES(b2), LANES(c2), LANES(d2), thr, sums);
}
#endif

static BlockSums block_sums = block_sums_c;
static const char *kernel_name = "portable";

/* The query's tables: float products with every centroid, quantised to bytes per sub-quantiser
   (offset by its minimum, one scale for all). Returns the scale; `*bias` gets the minima's sum. */
static float quantised_tables(const float *query, const float *centroids, int subs, int padded, int sub_dim,
                              uint8_t *table, float *bias) {
    float widest = 0.0f, spans = 0.0f, lows[padded], all[16 * padded];
    *bias = 0.0f;
    for (int m = 0; m < subs; m++) { /* products inline: a call per 2-d product cost more than the product */
        const float *part = query + m * sub_dim, *near = centroids + m * 16 * sub_dim;
        float low = INFINITY, high = -INFINITY, *products = all + 16 * m;
        if (sub_dim == 2) /* the usual sub-space (d192 in 96): a loop the compiler unrolls and vectorises */
            for (int c = 0; c < 16; c++) products[c] = near[2 * c] * part[0] + near[2 * c + 1] * part[1];
        else
            for (int c = 0; c < 16; c++) {
                float product = 0.0f;
                for (int d = 0; d < sub_dim; d++) product += near[c * sub_dim + d] * part[d];
                products[c] = product;
            }
        for (int c = 0; c < 16; c++) {
            low = products[c] < low ? products[c] : low;
            high = products[c] > high ? products[c] : high;
        }
        lows[m] = low;
        *bias += low;
        widest = fmaxf(widest, high - low);
        spans += high - low;
    }
    float scale = widest > 0.0f ? fminf(TOP / widest, (MAX_SUM - 0.5f * subs) / spans) : 1.0f;
    memset(table, 0, (size_t)16 * padded);
    for (int m = 0; m < subs; m++)
        for (int c = 0; c < 16; c++) table[16 * m + c] = (uint8_t)lrintf((all[16 * m + c] - lows[m]) * scale);
    return scale;
}

/* The 16-bit sum an item of a list at `base` must exceed to be offered once `bar` is held: one below the
   bar's own, so that neither a tie (kept when its row is lower) nor float rounding drops an item `worse`
   would keep; -1 (every item) for a NaN. */
static inline int16_t threshold(float bar, float base, float scale) {
    float need = floorf((bar - base) * scale) - 1.0f;
    return need >= 32767.0f ? 32767 : need >= -1.0f ? (int16_t)need : -1;
}

/* The kernel named `name` if this CPU runs it (NULL with ValueError otherwise); None: the one chosen at load. */
static BlockSums kernel_named(PyObject *name) {
    if (name == Py_None) return block_sums;
    const char *text = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (text && strcmp(text, "portable") == 0) return block_sums_c;
#if X86
    if (text && strcmp(text, "avx2") == 0 && __builtin_cpu_supports("avx2")) return block_sums_avx2;
    if (text && strcmp(text, "avx512") == 0 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512f"))
        return block_sums_avx512;
#endif
    PyErr_Format(PyExc_ValueError, "scan: no kernel %R on this CPU", name);
    return NULL;
}

/* The fast-scan lists of one index and one query's probe of them, as taken from Python. */
typedef struct {
    Buf bufs[7]; /* query, centroids, means, lists, codes_at, ids_at, sizes */
    const float *query, *centroids, *means;
    const int64_t *lists, *codes_at, *ids_at, *sizes;
    Py_ssize_t subs, sub_dim, dims, n_lists, nprobe;
} Lists;

/* Takes args[0..6] (query, centroids, means, lists, codes_at, ids_at, sizes) and checks that they fit
   together; -1 with an exception (and nothing held) otherwise. */
static int take_lists(PyObject *const *args, Lists *in) {
    const char *names[] = {"query", "centroids", "means", "lists", "codes_at", "ids_at", "sizes"};
    Py_ssize_t widths[] = {4, 4, 4, 8, 8, 8, 8};
    memset(in, 0, sizeof *in);
    for (int i = 0; i < 7; i++)
        if (get(args[i], &in->bufs[i], widths[i], 0, names[i]) < 0 || !in->bufs[i].held) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "%s is required", names[i]);
            release(in->bufs, 7);
            return -1;
        }
    Py_buffer *cv = &in->bufs[1].view, *mv = &in->bufs[2].view;
    int ok = cv->ndim == 3 && cv->shape[1] == 16 && mv->ndim == 2;
    in->subs = ok ? cv->shape[0] : 0, in->sub_dim = ok ? cv->shape[2] : 0;
    in->n_lists = ok ? mv->shape[0] : 0, in->dims = ok ? mv->shape[1] : 0;
    in->nprobe = in->bufs[3].view.len / 8;
    ok = ok && in->subs * in->sub_dim == in->dims && in->subs <= MAX_SUBS && in->bufs[0].view.len / 4 >= in->dims;
    for (int i = 4; i < 7; i++) ok = ok && in->bufs[i].view.len / 8 == in->n_lists;
    in->lists = in->bufs[3].view.buf;
    for (Py_ssize_t i = 0; ok && i < in->nprobe; i++) ok = in->lists[i] < in->n_lists;
    if (!ok) {
        release(in->bufs, 7);
        PyErr_SetString(PyExc_ValueError, "scan: shapes that do not fit together, a list out of range or keep < 1");
        return -1;
    }
    in->query = in->bufs[0].view.buf, in->centroids = cv->buf, in->means = mv->buf;
    in->codes_at = in->bufs[4].view.buf, in->ids_at = in->bufs[5].view.buf, in->sizes = in->bufs[6].view.buf;
    return 0;
}

/* A per-query stopping rule over lists given nearest first (by the probe): before opening its `least`+1-th
   list (and each after), the scan stops when bar − c + depth · (c₁ − c) + spent · ln(lists opened) > margin,
   where bar is the score the kept items must beat, c the next list's coarse term and c₁ the first list's: the
   shortlist already clears what the next list's items are likely to score. `least` 0: no rule (every probed
   list is opened, nearest by coarse term first). */
typedef struct {
    Py_ssize_t least;
    float margin, depth, spent;
} Stop;

/* Asks the caches for the block of codes at `codes` (a list's pages, read one by one, each start the hardware
   prefetcher anew: prefetching a block ahead took ~10% off pkgsum's scan). */
static inline void prefetch_block(const uint8_t *codes, int padded) {
    for (int line = 0; line < 16 * padded; line += 64) __builtin_prefetch(codes + line);
}

/* The best `keep` items of the probed lists into `kept` (room for 2 · keep), best first if `sorted` (in no
   order otherwise: a re-rank ranks them afresh); returns how many, the items scanned in `*scanned` and the
   lists opened in `*opened` (fewer than probed where `stop` ends the scan early). Runs without the GIL.
   -1: out of memory. */
static Py_ssize_t scan_lists(const Lists *in, BlockSums sums_of, Py_ssize_t keep, int sorted, const Stop *stop,
                             Item *kept, long long *scanned, Py_ssize_t *opened) {
    int padded = (int)(in->subs + (in->subs & 1));
    uint8_t *table = PyMem_RawMalloc((size_t)16 * padded + 64);
    Item *order = PyMem_RawMalloc((in->nprobe ? in->nprobe : 1) * sizeof(Item)); /* probed lists, nearest first */
    if (!table || !order) {
        PyMem_RawFree(table);
        PyMem_RawFree(order);
        return -1;
    }
    const float *query = in->query;
    Py_ssize_t size = 0, n_order = 0, room = 2 * keep, dims = in->dims;
    float bias, scale = quantised_tables(query, in->centroids, (int)in->subs, padded, (int)in->sub_dim, table, &bias);
    float unit = 1.0f / scale;
    *scanned = 0;
    /* nearest first: every list's coarse term, sorted; under a stopping rule, the order given (the probe's,
       best first), each coarse term computed as its list comes up, so the lists never opened cost nothing */
    for (Py_ssize_t p = 0; p < in->nprobe; p++) {
        int64_t list = in->lists[p];
        if (list >= 0 && in->sizes[list] > 0)
            order[n_order++] = (Item){stop->least ? 0.0f : dot(in->means + list * dims, query, dims) + bias, list};
    }
    if (!stop->least) sort_items(order, n_order);
    Item bar = {-INFINITY, INT64_MAX}; /* what an item must beat once `keep` are held */
    int16_t sums[BLOCK];
    float nearest = 0.0f;
    Py_ssize_t p = 0; /* an order[].score holds the tables' bias: the coarse term alone is order[].score − bias */
    for (; p < n_order; p++) {
        Item next = order[p];
        if (stop->least) {
            next.score = dot(in->means + next.row * dims, query, dims) + bias;
            if (p == 0) nearest = next.score;
            if (p >= stop->least && bar.score > -INFINITY &&
                bar.score - (next.score - bias) + stop->depth * (nearest - next.score) + stop->spent * logf((float)p) >
                    stop->margin)
                break;
        }
        int64_t list = next.row, count = in->sizes[list];
        const uint8_t *codes = (const uint8_t *)(intptr_t)in->codes_at[list];
        const int64_t *rows = (const int64_t *)(intptr_t)in->ids_at[list];
        float base = next.score;
        *scanned += count;
        if (p + 1 < n_order) /* the next list's first block (every list in order holds items), and this list's second */
            prefetch_block((const uint8_t *)(intptr_t)in->codes_at[order[p + 1].row], padded);
        if (count > BLOCK) prefetch_block(codes + 16 * padded, padded);
        int16_t thr = threshold(bar.score, base, scale);
        for (int64_t start = 0; start < count; start += BLOCK, codes += 16 * padded) {
            if (start + 2 * BLOCK < count) prefetch_block(codes + 32 * padded, padded); /* the block after next */
            uint32_t mask = sums_of(codes, table, padded, thr, sums);
            if (count - start < BLOCK) mask &= (1u << (count - start)) - 1;
            while (mask) {
                int item = __builtin_ctz(mask);
                mask &= mask - 1;
                Item it = {base + sums[item] * unit, rows[start + item], 0.0f};
                if (!worse(&bar, &it)) continue;
                kept[size++] = it;
                if (size == room) {
                    keep_best(kept, size, keep);
                    size = keep;
                    bar = worst_of(kept, keep);
                    thr = threshold(bar.score, base, scale);
                }
            }
        }
    }
    if (size > keep) keep_best(kept, size, keep);
    if (size > keep) size = keep;
    if (sorted) sort_items(kept, size);
    *opened = p;
    PyMem_RawFree(table);
    PyMem_RawFree(order);
    return size;
}

/* `stop` from Python: None (no rule) or (least, margin, depth, spent); 0 with ValueError/TypeError otherwise. */
static int take_stop(PyObject *arg, Stop *stop) {
    memset(stop, 0, sizeof *stop);
    if (arg == Py_None) return 1;
    if (!PyTuple_Check(arg) || PyTuple_GET_SIZE(arg) != 4) {
        PyErr_Format(PyExc_TypeError, "scan: stop must be None or a tuple (least, margin, depth, spent), got %R", arg);
        return 0;
    }
    if (!PyArg_ParseTuple(arg, "nfff", &stop->least, &stop->margin, &stop->depth, &stop->spent)) return 0;
    if (stop->least < 1) {
        PyErr_SetString(PyExc_ValueError, "scan: a stopping rule opens at least one list");
        return 0;
    }
    return 1;
}

/* scan(query, centroids, means, lists, codes_at, ids_at, sizes, keep, out_rows, out_scores[, kernel[, stop]])
   -> (kept, scanned, opened)
   query: float32 (at least the scan dim); centroids: float32 (sub-quantisers × 16 × sub-dim); means: float32
   (lists × scan dim), each list's mean (the coarse term is the query's product with it); lists: int64 (the
   probed ones; negative entries are skipped); codes_at, ids_at, sizes: int64 per list, the addresses of its
   packed codes and its rows, and its item count; out_*: at least `keep` items, best first; kernel: "portable",
   "avx2" or "avx512" (tests compare them), the fastest this CPU runs by default (None); stop: None or
   (least, margin, depth, spent), the stopping rule of `Stop`. opened: the non-empty lists scanned. */
static PyObject *scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 10 || nargs > 12) {
        PyErr_SetString(PyExc_TypeError, "scan takes 10 to 12 arguments");
        return NULL;
    }
    BlockSums sums_of = kernel_named(nargs >= 11 ? args[10] : Py_None);
    Stop stop;
    Lists in;
    if (!sums_of || !take_stop(nargs == 12 ? args[11] : Py_None, &stop) || take_lists(args, &in) < 0) return NULL;
    Buf outs[2];
    memset(outs, 0, sizeof outs);
    Py_ssize_t keep = PyLong_AsSsize_t(args[7]);
    if (keep < 1 || get(args[8], &outs[0], 8, 1, "out_rows") < 0 || get(args[9], &outs[1], 4, 1, "out_scores") < 0 ||
        !outs[0].held || !outs[1].held || outs[0].view.len / 8 < keep || outs[1].view.len / 4 < keep) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "scan: shapes that do not fit together, a list out of range or keep < 1");
        release(outs, 2);
        release(in.bufs, 7);
        return NULL;
    }
    Item *kept = PyMem_Malloc(2 * keep * sizeof(Item));
    Py_ssize_t size = -1;
    long long scanned = 0;
    Py_ssize_t opened = 0;
    if (kept) {
        Py_BEGIN_ALLOW_THREADS
        size = scan_lists(&in, sums_of, keep, 1, &stop, kept, &scanned, &opened);
        for (Py_ssize_t i = 0; i < size; i++) {
            ((int64_t *)outs[0].view.buf)[i] = kept[i].row;
            ((float *)outs[1].view.buf)[i] = kept[i].score;
        }
        Py_END_ALLOW_THREADS
    }
    PyMem_Free(kept);
    release(outs, 2);
    release(in.bufs, 7);
    if (size < 0) return PyErr_NoMemory();
    return Py_BuildValue("(nLn)", size, scanned, opened);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define MAX_STAGES 8

/* search(query, centroids, means, lists, codes_at, ids_at, sizes, keep, stages, out_rows, out_scores[, stop])
   -> (kept, scanned, opened, seconds per stage)
   One query's whole funnel after the probe: the scan of the probed lists (as `scan`) keeps `keep`, then
   each stage (layout, norms_at, stride, keep, scale) re-ranks the rows the last one kept as `rerank` does
   (layout: int64 blocks × 3 from where the stage before stopped; scale < 0: the final scores), carrying
   the products from stage to stage. out_*: at least the last stage's keep, best first. */
static PyObject *search(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 11 && nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "search takes 11 or 12 arguments");
        return NULL;
    }
    Stop stop;
    Lists in;
    if (!take_stop(nargs == 12 ? args[11] : Py_None, &stop) || take_lists(args, &in) < 0) return NULL;
    Buf bufs[MAX_STAGES + 2];
    memset(bufs, 0, sizeof bufs);
    long long norms_at[MAX_STAGES];
    Py_ssize_t strides[MAX_STAGES], keeps[MAX_STAGES + 1], n_stages = 0;
    double scales[MAX_STAGES];
    keeps[0] = PyLong_AsSsize_t(args[7]);
    PyObject *stages = PyErr_Occurred() ? NULL : PySequence_Fast(args[8], "search: stages must be a sequence");
    int ok = stages && keeps[0] >= 1 && keeps[0] <= PY_SSIZE_T_MAX / (Py_ssize_t)(2 * sizeof(Item)) &&
             PySequence_Fast_GET_SIZE(stages) <= MAX_STAGES;
    for (Py_ssize_t i = 0; ok && i < PySequence_Fast_GET_SIZE(stages); i++, n_stages++) {
        PyObject *layout, *stage = PySequence_Fast_GET_ITEM(stages, i);
        if (!PyTuple_Check(stage)) {
            PyErr_SetString(PyExc_TypeError, "search: each stage is a tuple (layout, norms_at, stride, keep, scale)");
            ok = 0;
            break;
        }
        ok = PyArg_ParseTuple(stage, "OLnnd", &layout, &norms_at[i], &strides[i], &keeps[i + 1], &scales[i]) &&
             get(layout, &bufs[i], 8, 0, "layout") == 0 && bufs[i].held && keeps[i + 1] >= 1;
    }
    Py_ssize_t last = ok ? keeps[n_stages] : 0;
    ok = ok && get(args[9], &bufs[MAX_STAGES], 8, 1, "out_rows") == 0 && get(args[10], &bufs[MAX_STAGES + 1], 4, 1, "out_scores") == 0 &&
         bufs[MAX_STAGES].held && bufs[MAX_STAGES + 1].held && bufs[MAX_STAGES].view.len / 8 >= last &&
         bufs[MAX_STAGES + 1].view.len / 4 >= last;
    Py_XDECREF(stages);
    Item *kept = ok ? PyMem_Malloc(2 * keeps[0] * sizeof(Item)) : NULL;
    Item *heap = ok ? PyMem_Malloc(keeps[0] * sizeof(Item)) : NULL;
    int64_t *rows = ok ? PyMem_Malloc(keeps[0] * sizeof(int64_t)) : NULL;
    float *dots = ok ? PyMem_Malloc(keeps[0] * sizeof(float)) : NULL;
    if (!ok || !kept || !heap || !rows || !dots) {
        if (!PyErr_Occurred()) {
            if (ok) PyErr_NoMemory();
            else PyErr_SetString(PyExc_ValueError, "search: stages, keeps or outputs that do not fit together");
        }
        PyMem_Free(kept), PyMem_Free(heap), PyMem_Free(rows), PyMem_Free(dots);
        release(bufs, MAX_STAGES + 2);
        release(in.bufs, 7);
        return NULL;
    }
    double seconds[MAX_STAGES + 1];
    long long scanned = 0;
    Py_ssize_t size, opened = 0;
    Py_BEGIN_ALLOW_THREADS
    double start = now();
    size = scan_lists(&in, block_sums, keeps[0], n_stages == 0, &stop, kept, &scanned, &opened); /* a re-rank ranks them afresh */
    seconds[0] = now() - start;
    for (Py_ssize_t s = 0; s < n_stages && size > 0; s++) {
        start += seconds[s];
        for (Py_ssize_t i = 0; i < size; i++) rows[i] = kept[i].row, dots[i] = kept[i].dot;
        size = rerank_rows(in.query, rows, size, bufs[s].view.buf, bufs[s].view.len / 24, s ? dots : NULL,
                           norms_at[s], strides[s], scales[s], 0, keeps[s + 1], heap);
        memcpy(kept, heap, size * sizeof(Item));
        seconds[s + 1] = now() - start;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        ((int64_t *)bufs[MAX_STAGES].view.buf)[i] = kept[i].row;
        ((float *)bufs[MAX_STAGES + 1].view.buf)[i] = kept[i].score;
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(kept), PyMem_Free(heap), PyMem_Free(rows), PyMem_Free(dots);
    release(bufs, MAX_STAGES + 2);
    release(in.bufs, 7);
    if (size < 0) return PyErr_NoMemory();
    PyObject *times = PyTuple_New(n_stages + 1);
    for (Py_ssize_t s = 0; times && s <= n_stages; s++) {
        PyObject *value = PyFloat_FromDouble(size > 0 || s == 0 ? seconds[s] : 0.0);
        if (!value) Py_CLEAR(times);
        else PyTuple_SET_ITEM(times, s, value);
    }
    return times ? Py_BuildValue("(nLnN)", size, scanned, opened, times) : NULL;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "One query's scan of 4-bit fast-scan IVF lists: (kept, items scanned), the best first in the outputs."},
    {"search", (PyCFunction)(void (*)(void))search, METH_FASTCALL,
     "One query's scan of fast-scan lists and its re-rank stages: (kept, items scanned, seconds per stage)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastscan(void) {
#if X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512f")) {
        block_sums = block_sums_avx512;
        kernel_name = "avx512";
    } else if (__builtin_cpu_supports("avx2")) {
        block_sums = block_sums_avx2;
        kernel_name = "avx2";
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddStringConstant(m, "KERNEL", kernel_name) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
