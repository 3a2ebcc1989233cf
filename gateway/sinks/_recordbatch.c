/* Native encoder of Kafka v2 record batches: many records in one call, header and CRC-32C in one.
 *
 * The pure-Python twin is gateway/sinks/recordbatch_py.py; both write byte for byte what aiokafka's
 * own builder (aiokafka/record/_crecords/default_records.pyx) writes for the same records, one
 * timestamp per batch (tests/unit/test_recordbatch.py checks all three against each other).
 *
 * encode(values, keys, headers, order, start, batch_size) -> (bytearray, count)
 *     Records values[i] (key keys[i], headers headers[i]) for i = order[start], order[start+1], …
 *     (i = start, start+1, … when order is None) after a blank 61-byte batch header, as many as fit
 *     in batch_size bytes by aiokafka's rule (always the first one). No Python code runs during
 *     the call, so a headers list seen again (every record of a flush shares one) is encoded once.
 * encode_lines(runs, headers, run, offset, batch_size) -> (bytearray, count, run, offset)
 *     The same for unkeyed records given as runs of newline-terminated lines (msgspec's
 *     `encode_lines` output: one run per request, whose records share headers[run]): records from
 *     byte `offset` of runs[run] on, as many as fit; returns where the next batch starts
 *     (len(runs), 0 once every record is in). No per-record Python object is made or read.
 * finish(buffer, count, timestamp, producer_id, producer_epoch, base_sequence, attributes)
 *     Fill in the batch header and its CRC-32C, in place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ABI 2
#define HEADER_SIZE 61
#define LENGTH_OFFSET 8
#define LEADER_EPOCH_OFFSET 12 /* the batch length counts from here */
#define CRC_OFFSET 17
#define ATTRIBUTES_OFFSET 21   /* the CRC covers from here to the end */

/* ---- varints (zigzag, as every varint in a v2 record) ---------------------------------------- */

static inline Py_ssize_t varint_size(int64_t v) {
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    Py_ssize_t n = 1;
    while (u >= 0x80) {
        u >>= 7;
        n++;
    }
    return n;
}

static inline char *put_varint(char *p, int64_t v) {
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (u >= 0x80) {
        *p++ = (char)((u & 0x7f) | 0x80);
        u >>= 7;
    }
    *p++ = (char)u;
    return p;
}

static inline void put_be(char *p, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

/* ---- CRC-32C (Castagnoli): SSE4.2 when the CPU has it, else a table ------------------------- */

static uint32_t crc_table[256];
static int crc_hardware = 0;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    crc_hardware = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_software(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(const unsigned char *p, size_t n) {
    uint64_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#endif

static uint32_t crc32c(const unsigned char *p, size_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (crc_hardware)
        return crc_sse42(p, n);
#endif
    return crc_software(p, n);
}

/* ---- one record's parts ----------------------------------------------------------------------- */

/* A key, value or header value: bytes, bytearray or a contiguous byte memoryview (what aiokafka's
 * builders take), or None (-1). Pointers stay valid for the call: no Python code runs in it. */
static int bytes_or_none(PyObject *obj, const char **data, Py_ssize_t *len, const char *what) {
    if (obj == Py_None) {
        *data = NULL;
        *len = -1;
    } else if (PyBytes_Check(obj)) {
        *data = PyBytes_AS_STRING(obj);
        *len = PyBytes_GET_SIZE(obj);
    } else if (PyByteArray_Check(obj)) {
        *data = PyByteArray_AS_STRING(obj);
        *len = PyByteArray_GET_SIZE(obj);
    } else if (PyMemoryView_Check(obj) && PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(obj), 'C') &&
               PyMemoryView_GET_BUFFER(obj)->itemsize == 1) {
        *data = PyMemoryView_GET_BUFFER(obj)->buf;
        *len = PyMemoryView_GET_BUFFER(obj)->len;
    } else {
        PyErr_Format(PyExc_TypeError, "a record %s must be bytes or None, not %.80s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

/* The encoded headers of the record last looked at (count, then each key and value). */
typedef struct {
    PyObject *list; /* borrowed; NULL: none encoded yet */
    char *data;
    Py_ssize_t size, cap;
} HeaderBlock;

static int header_block(HeaderBlock *hb, PyObject *list) {
    if (list == hb->list)
        return 0;
    Py_ssize_t n = 0;
    if (list != Py_None) {
        if (!PyList_Check(list)) {
            PyErr_Format(PyExc_TypeError, "a record's headers must be a list, not %.80s",
                         Py_TYPE(list)->tp_name);
            return -1;
        }
        n = PyList_GET_SIZE(list);
    }
    Py_ssize_t size = varint_size(n);
    for (Py_ssize_t h = 0; h < n; h++) {
        PyObject *pair = PyList_GET_ITEM(list, h);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0))) {
            PyErr_SetString(PyExc_TypeError, "a header must be a (str, bytes | None) tuple");
            return -1;
        }
        const char *value;
        Py_ssize_t klen, vlen;
        if (PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &klen) == NULL ||
            bytes_or_none(PyTuple_GET_ITEM(pair, 1), &value, &vlen, "header value") < 0)
            return -1;
        size += varint_size(klen) + klen + (vlen < 0 ? 1 : varint_size(vlen) + vlen);
    }
    if (size > hb->cap) {
        char *grown = PyMem_Realloc(hb->data, (size_t)size);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        hb->data = grown;
        hb->cap = size;
    }
    char *p = put_varint(hb->data, n);
    for (Py_ssize_t h = 0; h < n; h++) {
        PyObject *pair = PyList_GET_ITEM(list, h);
        const char *value;
        Py_ssize_t klen, vlen;
        const char *key = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &klen);
        bytes_or_none(PyTuple_GET_ITEM(pair, 1), &value, &vlen, "header value"); /* checked above */
        p = put_varint(p, klen);
        memcpy(p, key, (size_t)klen);
        p += klen;
        p = put_varint(p, vlen);
        if (vlen > 0) {
            memcpy(p, value, (size_t)vlen);
            p += vlen;
        }
    }
    hb->list = list;
    hb->size = size;
    return 0;
}

typedef struct {
    PyObject *values, *keys, *headers, *order; /* keys, headers, order: NULL when None */
    Py_ssize_t nvalues;
} Source;

typedef struct {
    const char *key, *value;
    Py_ssize_t klen, vlen; /* -1: None */
} Parts;

/* The parts of the record at position j of the source; its headers into hb. */
static int record_at(const Source *src, Py_ssize_t j, Parts *out, HeaderBlock *hb) {
    Py_ssize_t i = j;
    if (src->order != NULL) {
        i = PyLong_AsSsize_t(PyList_GET_ITEM(src->order, j));
        if (i == -1 && PyErr_Occurred())
            return -1;
    }
    if (i < 0 || i >= src->nvalues) {
        PyErr_SetString(PyExc_IndexError, "record index out of range");
        return -1;
    }
    if (bytes_or_none(PyList_GET_ITEM(src->values, i), &out->value, &out->vlen, "value") < 0)
        return -1;
    out->key = NULL;
    out->klen = -1;
    if (src->keys != NULL) {
        if (i >= PyList_GET_SIZE(src->keys)) {
            PyErr_SetString(PyExc_IndexError, "fewer keys than records");
            return -1;
        }
        if (bytes_or_none(PyList_GET_ITEM(src->keys, i), &out->key, &out->klen, "key") < 0)
            return -1;
    }
    if (src->headers == NULL)
        return header_block(hb, Py_None);
    if (i >= PyList_GET_SIZE(src->headers)) {
        PyErr_SetString(PyExc_IndexError, "fewer header lists than records");
        return -1;
    }
    return header_block(hb, PyList_GET_ITEM(src->headers, i));
}

/* Size of a record's body (what its length prefix counts): attributes, timestamp delta (always 0:
 * one timestamp per batch), offset delta, key, value, headers. */
static inline Py_ssize_t body_size(const Parts *r, const HeaderBlock *hb, Py_ssize_t offset) {
    return 2 + varint_size(offset) + (r->klen < 0 ? 1 : varint_size(r->klen) + r->klen) +
           (r->vlen < 0 ? 1 : varint_size(r->vlen) + r->vlen) + hb->size;
}

static char *put_record(char *p, const Parts *r, const HeaderBlock *hb, Py_ssize_t offset,
                        Py_ssize_t body) {
    p = put_varint(p, body);
    *p++ = 0; /* attributes */
    *p++ = 0; /* timestamp delta */
    p = put_varint(p, offset);
    p = put_varint(p, r->klen);
    if (r->klen > 0) {
        memcpy(p, r->key, (size_t)r->klen);
        p += r->klen;
    }
    p = put_varint(p, r->vlen);
    if (r->vlen > 0) {
        memcpy(p, r->value, (size_t)r->vlen);
        p += r->vlen;
    }
    memcpy(p, hb->data, (size_t)hb->size);
    return p + hb->size;
}

/* A new bytearray of `size` bytes for a batch (*out): its header zeroed; where records go. */
static char *blank_batch(Py_ssize_t size, PyObject **out) {
    *out = PyByteArray_FromStringAndSize(NULL, size);
    if (*out == NULL)
        return NULL;
    char *p = PyByteArray_AS_STRING(*out);
    memset(p, 0, HEADER_SIZE);
    return p + HEADER_SIZE;
}

static PyObject *list_or_null(PyObject *obj, const char *what, int *failed) {
    if (obj == Py_None)
        return NULL;
    if (!PyList_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list or None", what);
        *failed = 1;
    }
    return obj;
}

static PyObject *encode(PyObject *module, PyObject *args) {
    PyObject *values, *keys, *headers, *order;
    Py_ssize_t start, batch_size;
    if (!PyArg_ParseTuple(args, "O!OOOnn:encode", &PyList_Type, &values, &keys, &headers, &order,
                          &start, &batch_size))
        return NULL;
    int failed = 0;
    Source src = {values, list_or_null(keys, "keys", &failed),
                  list_or_null(headers, "headers", &failed), list_or_null(order, "order", &failed),
                  PyList_GET_SIZE(values)};
    if (failed)
        return NULL;
    Py_ssize_t stop = src.order != NULL ? PyList_GET_SIZE(src.order) : src.nvalues;
    if (start < 0)
        start = 0;
    HeaderBlock hb = {NULL, NULL, 0, 0};
    Parts r;
    PyObject *out = NULL;
    /* first pass: how many records fit (aiokafka: the first always; then while pos + size < limit) */
    Py_ssize_t pos = HEADER_SIZE, count = 0;
    for (Py_ssize_t j = start; j < stop; j++, count++) {
        if (record_at(&src, j, &r, &hb) < 0)
            goto done;
        Py_ssize_t body = body_size(&r, &hb, count);
        Py_ssize_t size = body + varint_size(body);
        if (count > 0 && pos + size >= batch_size)
            break;
        pos += size;
    }
    char *p = blank_batch(pos, &out);
    if (p == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < count; k++) {
        if (record_at(&src, start + k, &r, &hb) < 0) {
            Py_CLEAR(out);
            goto done;
        }
        p = put_record(p, &r, &hb, k, body_size(&r, &hb, k));
    }
done:
    PyMem_Free(hb.data);
    if (out == NULL)
        return NULL;
    return Py_BuildValue("(Nn)", out, count);
}

/* ---- records as runs of lines ------------------------------------------------------------------ */

/* Run r of `runs`: bytes whose every line ends with a newline (or empty). */
static int run_at(PyObject *runs, Py_ssize_t r, const char **data, Py_ssize_t *len) {
    PyObject *obj = PyList_GET_ITEM(runs, r);
    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "a run of records must be bytes, not %.80s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *data = PyBytes_AS_STRING(obj);
    *len = PyBytes_GET_SIZE(obj);
    if (*len > 0 && (*data)[*len - 1] != '\n') {
        PyErr_SetString(PyExc_ValueError, "a run of records must end with a newline");
        return -1;
    }
    return 0;
}

/* The headers of run r's records into hb (headers: a list per run, or NULL for none). */
static int run_headers(PyObject *headers, Py_ssize_t r, HeaderBlock *hb) {
    if (headers == NULL)
        return header_block(hb, Py_None);
    if (r >= PyList_GET_SIZE(headers)) {
        PyErr_SetString(PyExc_IndexError, "fewer header lists than runs");
        return -1;
    }
    return header_block(hb, PyList_GET_ITEM(headers, r));
}

static PyObject *encode_lines(PyObject *module, PyObject *args) {
    PyObject *runs, *headers;
    Py_ssize_t run, offset, batch_size;
    if (!PyArg_ParseTuple(args, "O!Onnn:encode_lines", &PyList_Type, &runs, &headers, &run,
                          &offset, &batch_size))
        return NULL;
    int failed = 0;
    headers = list_or_null(headers, "headers", &failed);
    if (failed)
        return NULL;
    Py_ssize_t nruns = PyList_GET_SIZE(runs);
    if (run < 0 || offset < 0) {
        PyErr_SetString(PyExc_ValueError, "run and offset must not be negative");
        return NULL;
    }
    HeaderBlock hb = {NULL, NULL, 0, 0};
    Parts r = {NULL, NULL, -1, 0};
    PyObject *out = NULL;
    const char *data;
    Py_ssize_t len;
    /* first pass: how many records fit, and where the next batch starts */
    Py_ssize_t pos = HEADER_SIZE, count = 0, end_run = run, end_offset = offset;
    for (Py_ssize_t k = run; k < nruns; k++) {
        if (run_at(runs, k, &data, &len) < 0 || run_headers(headers, k, &hb) < 0)
            goto done;
        Py_ssize_t at = k == run ? offset : 0;
        if (at > len) {
            PyErr_SetString(PyExc_ValueError, "offset past the end of its run");
            goto done;
        }
        while (at < len) {
            const char *nl = memchr(data + at, '\n', (size_t)(len - at)); /* found: ends with one */
            r.value = data + at;
            r.vlen = nl - r.value;
            Py_ssize_t body = body_size(&r, &hb, count);
            Py_ssize_t size = body + varint_size(body);
            if (count > 0 && pos + size >= batch_size) {
                end_run = k;
                end_offset = at;
                goto fitted;
            }
            pos += size;
            count++;
            at = nl - data + 1;
        }
        end_run = k + 1;
        end_offset = 0;
    }
fitted:;  /* a null statement: a declaration may not follow a label before C23 */
    char *p = blank_batch(pos, &out);
    if (p == NULL)
        goto done;
    Py_ssize_t written = 0;
    for (Py_ssize_t k = run; written < count; k++) {
        if (run_at(runs, k, &data, &len) < 0 || run_headers(headers, k, &hb) < 0) {
            Py_CLEAR(out);
            goto done;
        }
        Py_ssize_t at = k == run ? offset : 0;
        while (at < len && written < count) {
            const char *nl = memchr(data + at, '\n', (size_t)(len - at));
            r.value = data + at;
            r.vlen = nl - r.value;
            p = put_record(p, &r, &hb, written, body_size(&r, &hb, written));
            written++;
            at = nl - data + 1;
        }
    }
done:
    PyMem_Free(hb.data);
    if (out == NULL)
        return NULL;
    return Py_BuildValue("(Nnnn)", out, count, end_run, end_offset);
}

static PyObject *finish(PyObject *module, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t count;
    long long timestamp, producer_id;
    int producer_epoch, base_sequence, attributes;
    if (!PyArg_ParseTuple(args, "w*nLLiii:finish", &buf, &count, &timestamp, &producer_id,
                          &producer_epoch, &base_sequence, &attributes))
        return NULL;
    if (buf.len < HEADER_SIZE) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "a record batch is at least 61 bytes long");
        return NULL;
    }
    char *p = buf.buf;
    put_be(p, 0, 8);                                       /* base offset: the broker sets it */
    put_be(p + LENGTH_OFFSET, (uint64_t)(buf.len - LEADER_EPOCH_OFFSET), 4);
    put_be(p + LEADER_EPOCH_OFFSET, (uint64_t)-1, 4);      /* partition leader epoch: none */
    p[16] = 2;                                             /* magic */
    put_be(p + ATTRIBUTES_OFFSET, (uint64_t)attributes, 2);
    put_be(p + 23, (uint64_t)(count > 0 ? count - 1 : 0), 4); /* last offset delta */
    put_be(p + 27, (uint64_t)timestamp, 8);                /* first timestamp */
    put_be(p + 35, (uint64_t)timestamp, 8);                /* max timestamp */
    put_be(p + 43, (uint64_t)producer_id, 8);
    put_be(p + 51, (uint64_t)producer_epoch, 2);
    put_be(p + 53, (uint64_t)base_sequence, 4);
    put_be(p + 57, (uint64_t)count, 4);
    uint32_t crc = crc32c((const unsigned char *)p + ATTRIBUTES_OFFSET,
                          (size_t)(buf.len - ATTRIBUTES_OFFSET));
    put_be(p + CRC_OFFSET, crc, 4);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

static PyObject *crc(PyObject *module, PyObject *arg) {
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t c = crc32c(buf.buf, (size_t)buf.len);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, "Encode records after a blank batch header: (bytearray, count)."},
    {"encode_lines", encode_lines, METH_VARARGS,
     "Encode runs of newline-terminated records: (bytearray, count, next run, next offset)."},
    {"finish", finish, METH_VARARGS, "Fill in a batch's header and CRC-32C, in place."},
    {"crc32c", crc, METH_O, "CRC-32C of a bytes-like object."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "gateway.sinks._recordbatch",
    "Native encoder of Kafka v2 record batches (see gateway/sinks/recordbatch.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__recordbatch(void) {
    crc_init();
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "ABI", ABI) < 0 ||
        PyModule_AddIntConstant(m, "CRC_HARDWARE", crc_hardware) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
