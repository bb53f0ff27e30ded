/* Compiled kernels for the one-query search path, where every library call costs microseconds.

probe: an IVF query's nearest lists (and how many items they hold), in one call.
ids: the id strings of result rows from the memory-mapped id table, in one call.
squares, all_finite: a query's validation and a result's sanity check, without numpy's dispatch.

rerank: one query's re-rank stage over scattered rows of the column-block store, fused: the
products over whole blocks (read in place, rows prefetched a few ahead), added to the partial
products a previous stage left, scaled by each row's inverse prefix norm and the query's (cosine) or
turned into minus the squared distance by the row's and the query's squared prefix norms (l2), and
the best `keep` selected (score descending, ties to the lower row) — in one call instead of a dozen.
Built for every x86-64 with AVX-512 and AVX2 clones chosen at load time; other CPUs get the
portable build. Rows and layouts come from matsearch.store, which keeps the maps they point into
alive and has checked every row number.
*/
#include "_rows.h"

/* rerank(query, rows, layout, partial, norms_at, norms_stride, scale, keep, out_rows, out_scores, out_dots, l2)
   -> kept
   query: float32 (all dims); rows: int64 (n); layout: int64 (blocks × 3: address, first dim, width) of the
   blocks to read; partial: float32 (n) products so far, or None; norms_at: address of the rows' prefix norm
   at the stage's dim (float32, `norms_stride` floats from one row to the next), or 0 for inner product;
   a row's score is its product p, p / norm (cosine) or 2p − norm² (l2: ‖q‖² − ‖q − x‖²);
   scale: multiplies every score (1 for a shortlist); a negative scale makes the scores final: times the
   inverse norm of the query's prefix up to the last block read (0 for a zero prefix), or for l2 minus its
   squared norm, at most 0; out_*: at least min(keep, n) items, best first. */
static PyObject *rerank(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "rerank takes 12 arguments");
        return NULL;
    }
    Buf bufs[7];
    memset(bufs, 0, sizeof bufs);
    const char *names[] = {"query", "rows", "layout", "partial", "out_rows", "out_scores", "out_dots"};
    PyObject *objs[] = {args[0], args[1], args[2], args[3], args[8], args[9], args[10]};
    Py_ssize_t sizes[] = {4, 8, 8, 4, 8, 4, 4};
    for (int i = 0; i < 7; i++) {
        if (get(objs[i], &bufs[i], sizes[i], i >= 4, names[i]) < 0) {
            release(bufs, 7);
            return NULL;
        }
    }
    if (!bufs[0].held || !bufs[1].held || !bufs[2].held || !bufs[4].held || !bufs[5].held) {
        release(bufs, 7);
        PyErr_SetString(PyExc_TypeError, "rerank: query, rows, layout, out_rows and out_scores are required");
        return NULL;
    }
    long long norms_at = PyLong_AsLongLong(args[4]);
    Py_ssize_t stride = PyLong_AsSsize_t(args[5]);
    double scale = PyFloat_AsDouble(args[6]);
    Py_ssize_t keep = PyLong_AsSsize_t(args[7]);
    int l2 = PyObject_IsTrue(args[11]);
    if (l2 < 0 || PyErr_Occurred()) {
        release(bufs, 7);
        return NULL;
    }
    const float *query = bufs[0].view.buf;
    const int64_t *rows = bufs[1].view.buf, *layout = bufs[2].view.buf;
    const float *partial = bufs[3].held ? bufs[3].view.buf : NULL;
    Py_ssize_t n = bufs[1].view.len / 8, n_blocks = bufs[2].view.len / 24;
    if (keep > n) keep = n;
    if (keep < 0 || bufs[4].view.len / 8 < keep || bufs[5].view.len / 4 < keep ||
        (bufs[6].held && bufs[6].view.len / 4 < keep) || (partial && bufs[3].view.len / 4 < n)) {
        release(bufs, 7);
        PyErr_SetString(PyExc_ValueError, "rerank: an output or the partial products are too short");
        return NULL;
    }
    Item *heap = PyMem_Malloc((keep ? keep : 1) * sizeof(Item));
    if (!heap) {
        release(bufs, 7);
        return PyErr_NoMemory();
    }
    Py_ssize_t size;
    Py_BEGIN_ALLOW_THREADS
    size = rerank_rows(query, rows, n, layout, n_blocks, partial, norms_at, stride, scale, l2, keep, heap);
    int64_t *out_rows = bufs[4].view.buf;
    float *out_scores = bufs[5].view.buf, *out_dots = bufs[6].held ? bufs[6].view.buf : NULL;
    for (Py_ssize_t i = 0; i < size; i++) {
        out_rows[i] = heap[i].row;
        out_scores[i] = heap[i].score;
        if (out_dots) out_dots[i] = heap[i].dot;
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(heap);
    release(bufs, 7);
    return PyLong_FromSsize_t(size);
}

/* ids(ends, data, rows) -> list of str: the ids of `rows` (int64) from the id table's end offsets (uint64,
   one per row; row r spans data[ends[r - 1]:ends[r]], row 0 from 0) and UTF-8 bytes. Raises IndexError for a
   row outside the table and ValueError for offsets outside the bytes or bytes that are not UTF-8. */
static PyObject *ids(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "ids takes 3 arguments");
        return NULL;
    }
    Buf bufs[3];
    memset(bufs, 0, sizeof bufs);
    const char *names[] = {"ends", "data", "rows"};
    Py_ssize_t sizes[] = {8, 1, 8};
    for (int i = 0; i < 3; i++) {
        if (get(args[i], &bufs[i], sizes[i], 0, names[i]) < 0 || !bufs[i].held) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "ids: %s is required", names[i]);
            release(bufs, 3);
            return NULL;
        }
    }
    const uint64_t *ends = bufs[0].view.buf;
    const char *data = bufs[1].view.buf;
    const int64_t *rows = bufs[2].view.buf;
    Py_ssize_t count = bufs[0].view.len / 8, size = bufs[1].view.len, n = bufs[2].view.len / 8;
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        int64_t row = rows[i];
        if (row < 0 || row >= count) {
            PyErr_Format(PyExc_IndexError, "row %lld is outside the id table's %zd rows", (long long)row, count);
            Py_CLEAR(out);
            break;
        }
        uint64_t start = row ? ends[row - 1] : 0, stop = ends[row];
        if (start > stop || stop > (uint64_t)size) {
            PyErr_Format(PyExc_ValueError, "row %lld's id lies at bytes %llu-%llu of %zd", (long long)row,
                         (unsigned long long)start, (unsigned long long)stop, size);
            Py_CLEAR(out);
            break;
        }
        PyObject *id = PyUnicode_DecodeUTF8(data + start, (Py_ssize_t)(stop - start), "strict");
        if (!id) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, id);
    }
    release(bufs, 3);
    return out;
}

static int cmp_int64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* probe(centroids, query, nprobe, lists_out[, least, spread[, bias[, ranked]]]) -> lists chosen
   The `nprobe` rows of `centroids` (float32, lists × dims) with the largest inner product with the first
   dims of `query` (float32), plus `bias` (float32 per list, or None: 0), ties to the lower list, written to
   `lists_out` (int64) in ascending order (`ranked` true: best first).
   With `spread` (>= 0), only those of them whose score is within spread × ‖query[:dims]‖ of the best (a
   cosine gap), but at least `least`. A bias of −‖c‖²/2 ranks the centroids by distance (l2). */
static PyObject *probe(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 && nargs != 6 && nargs != 7 && nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "probe takes 4, 6, 7 or 8 arguments");
        return NULL;
    }
    int ranked = nargs == 8 ? PyObject_IsTrue(args[7]) : 0;
    if (ranked < 0) return NULL;
    Buf bufs[4];
    memset(bufs, 0, sizeof bufs);
    const char *names[] = {"centroids", "query", "lists_out", "bias"};
    PyObject *objs[] = {args[0], args[1], args[3], nargs >= 7 ? args[6] : Py_None};
    Py_ssize_t widths[] = {4, 4, 8, 4};
    for (int i = 0; i < 4; i++) {
        if (get(objs[i], &bufs[i], widths[i], i == 2, names[i]) < 0) {
            release(bufs, 4);
            return NULL;
        }
    }
    Py_ssize_t nprobe = PyLong_AsSsize_t(args[2]);
    Py_ssize_t least = nargs >= 6 ? PyLong_AsSsize_t(args[4]) : nprobe;
    double spread = nargs >= 6 ? PyFloat_AsDouble(args[5]) : -1.0;
    if (PyErr_Occurred() || !bufs[0].held || !bufs[1].held || !bufs[2].held || bufs[0].view.ndim != 2) {
        release(bufs, 4);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "probe: centroids (2-D), query and lists_out are required");
        return NULL;
    }
    Py_ssize_t n = bufs[0].view.shape[0], dims = bufs[0].view.shape[1];
    if (nprobe < 1 || nprobe > n || least < 1 || least > nprobe || bufs[2].view.len / 8 < nprobe || bufs[1].view.len / 4 < dims ||
        (bufs[3].held && bufs[3].view.len / 4 < n)) {
        release(bufs, 4);
        PyErr_Format(PyExc_ValueError, "probe: nprobe %zd of %zd lists, or a buffer too short", nprobe, n);
        return NULL;
    }
    Item *heap = PyMem_Malloc(nprobe * sizeof(Item));
    if (!heap) {
        release(bufs, 4);
        return PyErr_NoMemory();
    }
    const float *centroids = bufs[0].view.buf, *query = bufs[1].view.buf;
    const float *bias = bufs[3].held ? bufs[3].view.buf : NULL;
    int64_t *lists = bufs[2].view.buf;
    Py_ssize_t kept;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Item item = {dot(centroids + i * dims, query, dims) + (bias ? bias[i] : 0.0f), i, 0.0f};
        if (size < nprobe) {
            heap[size++] = item;
            if (size == nprobe)
                for (Py_ssize_t at = nprobe / 2 - 1; at >= 0; at--) sift_down(heap, size, at);
        } else if (worse(&heap[0], &item)) {
            heap[0] = item;
            sift_down(heap, size, 0);
        }
    }
    kept = nprobe;
    if (spread >= 0 || ranked) /* best first: the min-heap sorted in place, each worst moved to the end */
        for (Py_ssize_t end = nprobe - 1; end > 0; end--) {
            Item t = heap[0];
            heap[0] = heap[end];
            heap[end] = t;
            sift_down(heap, end, 0);
        }
    if (spread >= 0) {
        float floor = heap[0].score - (float)(spread * sqrt(dot(query, query, dims)));
        for (kept = least; kept < nprobe && heap[kept].score >= floor; kept++) {
        }
    }
    for (Py_ssize_t i = 0; i < kept; i++) lists[i] = heap[i].row;
    if (!ranked) qsort(lists, kept, sizeof(int64_t), cmp_int64);
    Py_END_ALLOW_THREADS
    PyMem_Free(heap);
    release(bufs, 4);
    return PyLong_FromSsize_t(kept);
}

/* A float32 C-contiguous buffer's values, or NULL (no error set) for anything else. */
static const float *floats(PyObject *obj, Py_buffer *view, Py_ssize_t *n) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        return NULL;
    }
    if (view->itemsize != 4 || !view->format || strcmp(view->format, "f") != 0) {
        PyBuffer_Release(view);
        return NULL;
    }
    *n = view->len / 4;
    return view->buf;
}

/* squares(x) -> the sum of squares of a float32 C-contiguous array (in double, so NaN or inf only from
   non-finite values), or -1.0 for any other object: the one-query validation without numpy's machinery. */
static PyObject *squares(PyObject *self, PyObject *x) {
    Py_buffer view;
    Py_ssize_t n;
    const float *v = floats(x, &view, &n);
    if (!v) return PyFloat_FromDouble(-1.0);
    double total = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) total += (double)v[i] * v[i];
    PyBuffer_Release(&view);
    return PyFloat_FromDouble(total);
}

/* all_finite(x) -> whether every value of a float32 C-contiguous array is finite (TypeError otherwise). */
static PyObject *all_finite(PyObject *self, PyObject *x) {
    Py_buffer view;
    Py_ssize_t n;
    const float *v = floats(x, &view, &n);
    if (!v) {
        PyErr_SetString(PyExc_TypeError, "all_finite takes a float32 C-contiguous array");
        return NULL;
    }
    int finite = 1;
    for (Py_ssize_t i = 0; i < n && finite; i++) finite = isfinite(v[i]);
    PyBuffer_Release(&view);
    return PyBool_FromLong(finite);
}

static PyMethodDef methods[] = {
    {"squares", squares, METH_O, "Sum of squares of a float32 C-contiguous array in double, else -1."},
    {"all_finite", all_finite, METH_O, "Whether a float32 C-contiguous array holds only finite values."},
    {"probe", (PyCFunction)(void (*)(void))probe, METH_FASTCALL, "The nearest lists by inner product, ascending."},
    {"ids", (PyCFunction)(void (*)(void))ids, METH_FASTCALL, "Ids of rows from the id table's offsets and bytes."},
    {"rerank", (PyCFunction)(void (*)(void))rerank, METH_FASTCALL,
     "One query's fused re-rank over whole store blocks with the best `keep` selected."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
