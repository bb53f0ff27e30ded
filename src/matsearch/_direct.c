/* Scattered rows of the store's block files read with direct I/O: each row's bytes in the fewest whole
sectors that hold them, read into aligned buffers without the page cache, with every read of a wave in
flight at once (Linux native AIO; plain pread, one after another, where it is missing).

A store meant to live on disk (Collection.create(on_disk=True)) re-ranks through this: a cold row then costs
its sectors (512 bytes each on most disks), not the 4 KiB page a memory map faults in, nor the kernel's
read-around. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/aio_abi.h>
#include <sys/syscall.h>
#define AIO 1
#else
#define AIO 0
#endif

#define WAVE 256     /* reads in flight together */
#define MAX_BLOCKS 64
#define MAX_WIDTH (1 << 24) /* a row's bytes in one file: WAVE reads of it stay far from overflow */

typedef struct {
    int fd;
    int64_t start, span; /* the sectors read: [start, start + span) of the file */
    int64_t skip, len;   /* the row's bytes within them */
    char *out;
} Read;

/* Reads `n` (at most WAVE) into `scratch` (slot bytes each, aligned), then copies each row out. Returns 0, or an
   errno (EIO for a read that stopped short of its row: a file shorter than the store says). */
static int run_wave(Read *reads, int n, char *scratch, int64_t slot) {
#if AIO
    aio_context_t ctx = 0;
    if (syscall(SYS_io_setup, n, &ctx) == 0) {
        struct iocb cbs[WAVE], *list[WAVE];
        struct io_event events[WAVE];
        memset(cbs, 0, sizeof(struct iocb) * n);
        for (int i = 0; i < n; i++) {
            cbs[i].aio_fildes = reads[i].fd;
            cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
            cbs[i].aio_buf = (uint64_t)(uintptr_t)(scratch + i * slot);
            cbs[i].aio_offset = reads[i].start;
            cbs[i].aio_nbytes = reads[i].span;
            cbs[i].aio_data = i;
            list[i] = &cbs[i];
        }
        int err = 0, submitted = 0, done = 0;
        while (submitted < n) {
            long got = syscall(SYS_io_submit, ctx, n - submitted, list + submitted);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                err = got < 0 ? errno : EIO;
                break;
            }
            submitted += got;
        }
        while (done < submitted) {
            long got = syscall(SYS_io_getevents, ctx, 1, submitted - done, events, NULL);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) {
                err = errno;
                break;
            }
            for (long e = 0; e < got; e++) {
                Read *r = &reads[events[e].data];
                if (events[e].res < 0) err = err ? err : (int)-events[e].res;
                else if (events[e].res < r->skip + r->len) err = err ? err : EIO;
                else memcpy(r->out, scratch + events[e].data * slot + r->skip, r->len);
            }
            done += got;
        }
        syscall(SYS_io_destroy, ctx);
        return err;
    }
#endif
    for (int i = 0; i < n; i++) {
        ssize_t got;
        do got = pread(reads[i].fd, scratch, reads[i].span, reads[i].start);
        while (got < 0 && errno == EINTR);
        if (got < 0) return errno;
        if (got < reads[i].skip + reads[i].len) return EIO;
        memcpy(reads[i].out, scratch + reads[i].skip, reads[i].len);
    }
    return 0;
}

/* fetch(fds, widths, rows, outs, sector) -> bytes read
   fds, widths: int64 per block file (its descriptor, its row's bytes); rows: int64; outs: one writable
   C-contiguous buffer per file, rows × its row's bytes; sector: the alignment direct I/O needs (a power of 2).
   Row r of file b is read from offset r · width_b into outs[b][i]. OSError on a failed or short read. */
static PyObject *fetch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "fetch takes 5 arguments");
        return NULL;
    }
    Py_buffer fds, widths, rows, outs[MAX_BLOCKS];
    int held = 0, n_outs = 0;
    PyObject *result = NULL, *seq = NULL;
    Read *reads = NULL;
    char *scratch = NULL;
    long long sector = PyLong_AsLongLong(args[4]);
    if (sector == -1 && PyErr_Occurred()) return NULL;
    if (PyObject_GetBuffer(args[0], &fds, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    held = 1;
    if (PyObject_GetBuffer(args[1], &widths, PyBUF_C_CONTIGUOUS) < 0) goto done;
    held = 2;
    if (PyObject_GetBuffer(args[2], &rows, PyBUF_C_CONTIGUOUS) < 0) goto done;
    held = 3;
    Py_ssize_t n_files = fds.len / 8, n = rows.len / 8;
    seq = PySequence_Fast(args[3], "fetch: outs must be a sequence");
    if (!seq) goto done;
    if (fds.itemsize != 8 || widths.itemsize != 8 || rows.itemsize != 8 || widths.len != fds.len ||
        PySequence_Fast_GET_SIZE(seq) != n_files || n_files > MAX_BLOCKS || sector < 1 || sector > (1 << 20) ||
        (sector & (sector - 1))) {
        PyErr_SetString(PyExc_ValueError, "fetch: fds, widths and outs must match (int64, at most 64 files) and "
                                          "sector be a power of 2");
        goto done;
    }
    const int64_t *fd_of = fds.buf, *width_of = widths.buf, *row_of = rows.buf;
    int64_t slot = 0;
    for (Py_ssize_t b = 0; b < n_files; b++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, b), &outs[b], PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
            goto done;
        n_outs++;
        if (width_of[b] < 1 || width_of[b] > MAX_WIDTH || n > PY_SSIZE_T_MAX / width_of[b] ||
            outs[b].len < n * width_of[b]) {
            PyErr_Format(PyExc_ValueError, "fetch: out %zd is shorter than rows x width (or the width is not "
                                           "in 1..%d bytes)", b, MAX_WIDTH);
            goto done;
        }
        int64_t span = (width_of[b] + 2 * sector - 2) / sector * sector; /* the most sectors a row can straddle */
        if (span > slot) slot = span;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (row_of[i] < 0 || row_of[i] > INT64_MAX / 65536) {
            PyErr_Format(PyExc_IndexError, "fetch: row %lld out of range", (long long)row_of[i]);
            goto done;
        }
    reads = PyMem_Malloc((n > 0 && n_files > 0 ? n * n_files : 1) * sizeof(Read));
    if (!reads || posix_memalign((void **)&scratch, sector > 4096 ? sector : 4096, WAVE * slot) != 0) {
        scratch = NULL;
        PyErr_NoMemory();
        goto done;
    }
    long long total = 0;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t b = 0; b < n_files; b++) {
            int64_t at = row_of[i] * width_of[b], start = at / sector * sector;
            int64_t end = (at + width_of[b] + sector - 1) / sector * sector;
            reads[count++] = (Read){(int)fd_of[b], start, end - start, at - start, width_of[b],
                                    (char *)outs[b].buf + i * width_of[b]};
            total += end - start;
        }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t at = 0; at < count && !err; at += WAVE)
        err = run_wave(reads + at, (int)(count - at < WAVE ? count - at : WAVE), scratch, slot);
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = PyLong_FromLongLong(total);
done:
    free(scratch);
    PyMem_Free(reads);
    for (int b = 0; b < n_outs; b++) PyBuffer_Release(&outs[b]);
    Py_XDECREF(seq);
    if (held >= 3) PyBuffer_Release(&rows);
    if (held >= 2) PyBuffer_Release(&widths);
    if (held >= 1) PyBuffer_Release(&fds);
    return result;
}

static PyMethodDef methods[] = {
    {"fetch", (PyCFunction)(void (*)(void))fetch, METH_FASTCALL,
     "Rows of block files read with direct I/O, each in the fewest whole sectors that hold it: bytes read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_direct", NULL, -1, methods};

PyMODINIT_FUNC PyInit__direct(void) { return PyModule_Create(&module); }
