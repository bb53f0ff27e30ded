/* What the compiled kernels share (_kernels.c, _fastscan.c): scored items and their order, dot products
built for AVX-512, AVX2 and any x86-64, buffers taken from Python objects, and the re-rank of scattered
rows of the column-block store (products over whole blocks, prefix norms, the best `keep` selected).
Everything is static: each kernel file gets its own copy. */
#ifndef MATSEARCH_ROWS_H
#define MATSEARCH_ROWS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif
#define UNUSED __attribute__((unused))

#define PREFETCH_AHEAD 4

typedef struct {
    float score;
    int64_t row;
    float dot;
} Item;

/* a worse than b: lower score, or the same score and a higher row */
static inline int worse(const Item *a, const Item *b) {
    return a->score < b->score || (a->score == b->score && a->row > b->row);
}

UNUSED static void sift_down(Item *heap, Py_ssize_t size, Py_ssize_t at) {
    for (;;) {
        Py_ssize_t low = at, left = 2 * at + 1, right = left + 1;
        if (left < size && worse(&heap[left], &heap[low])) low = left;
        if (right < size && worse(&heap[right], &heap[low])) low = right;
        if (low == at) return;
        Item t = heap[at];
        heap[at] = heap[low];
        heap[low] = t;
        at = low;
    }
}

UNUSED static int better_first(const void *a, const void *b) {
    const Item *x = a, *y = b;
    return worse(y, x) ? -1 : worse(x, y) ? 1 : 0;
}

/* Items best first: an insertion sort for the few a query sorts (probed lists, a stage's keep), where qsort's
   calls through a comparison pointer cost more than the moves; qsort beyond. */
UNUSED static void sort_items(Item *items, Py_ssize_t n) {
    if (n > 64) {
        qsort(items, n, sizeof(Item), better_first);
        return;
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        Item item = items[i];
        Py_ssize_t j = i;
        for (; j > 0 && worse(&items[j - 1], &item); j--) items[j] = items[j - 1];
        items[j] = item;
    }
}

CLONES UNUSED static float dot(const float *restrict x, const float *restrict q, int64_t width) {
    float s = 0.0f;
    for (int64_t d = 0; d < width; d++) s += x[d] * q[d];
    return s;
}

typedef struct {
    Py_buffer view;
    int held;
} Buf;

/* A C-contiguous buffer of `itemsize`-byte items (None: not held), writable if asked. */
UNUSED static int get(PyObject *obj, Buf *buf, Py_ssize_t itemsize, int writable, const char *name) {
    buf->held = 0;
    if (obj == Py_None) return 0;
    if (PyObject_GetBuffer(obj, &buf->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    buf->held = 1;
    if (buf->view.itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s must hold %zd-byte items", name, itemsize);
        return -1;
    }
    return 0;
}

UNUSED static void release(Buf *bufs, int n) {
    for (int i = 0; i < n; i++)
        if (bufs[i].held) PyBuffer_Release(&bufs[i].view);
}

static void prefetch_row(const int64_t *layout, Py_ssize_t n_blocks, int64_t row) {
    for (Py_ssize_t b = 0; b < n_blocks; b++) {
        const char *p = (const char *)(intptr_t)layout[3 * b] + row * layout[3 * b + 2] * 4;
        for (int64_t off = 0; off < layout[3 * b + 2] * 4; off += 64) __builtin_prefetch(p + off);
    }
}

/* One re-rank stage (no Python, no allocation): `rows`' products over the blocks of `layout` (int64, blocks
   × 3: address, first dim, width) added to `partial` (or 0), scored as the product p, p / norm (cosine) or
   2p − norm² (l2) with the prefix norm at `norms_at` (float32, `stride` apart per row; 0: p), times `scale`;
   a negative scale makes the scores final: times the inverse norm of the query's prefix up to the last
   block (0 for a zero prefix), or for l2 minus its squared norm, at most 0. The best `keep` (at most n) go
   to `heap`, best first; returns how many. */
UNUSED static Py_ssize_t rerank_rows(const float *query, const int64_t *rows, Py_ssize_t n, const int64_t *layout,
                                     Py_ssize_t n_blocks, const float *partial, long long norms_at, Py_ssize_t stride,
                                     double scale, int l2, Py_ssize_t keep, Item *heap) {
    Py_ssize_t size = 0;
    int final = scale < 0;
    float shift = 0.0f; /* l2, final: the query's squared prefix norm */
    if (keep > n) keep = n;
    if (final) {
        int64_t dims = n_blocks ? layout[3 * (n_blocks - 1) + 1] + layout[3 * (n_blocks - 1) + 2] : 0;
        double square = dot(query, query, dims);
        shift = l2 ? (float)square : 0.0f;
        scale = l2 ? 1.0 : square > 0 ? 1.0 / sqrt(square) : 0.0;
    }
    for (Py_ssize_t i = 0; i < n && i < PREFETCH_AHEAD; i++) prefetch_row(layout, n_blocks, rows[i]);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n) prefetch_row(layout, n_blocks, rows[i + PREFETCH_AHEAD]);
        int64_t row = rows[i];
        float total = partial ? partial[i] : 0.0f;
        for (Py_ssize_t b = 0; b < n_blocks; b++) {
            int64_t width = layout[3 * b + 2];
            const float *x = (const float *)(intptr_t)layout[3 * b] + row * width;
            total += dot(x, query + layout[3 * b + 1], width);
        }
        float score = total;
        if (norms_at) {
            float norm = ((const float *)(intptr_t)norms_at)[row * stride];
            score = l2 ? 2.0f * total - norm * norm : norm > 0.0f ? total / norm : 0.0f;
        }
        score = final && l2 ? fminf(score - shift, 0.0f) : score * (float)scale;
        Item item = {score, row, total};
        if (size < keep) {
            heap[size++] = item;
            if (size == keep)
                for (Py_ssize_t at = keep / 2 - 1; at >= 0; at--) sift_down(heap, size, at);
        } else if (keep && worse(&heap[0], &item)) {
            heap[0] = item;
            sift_down(heap, size, 0);
        }
    }
    sort_items(heap, size);
    return size;
}

#endif
