#ifndef FINESHARD_CHDF5_SHIM_H
#define FINESHARD_CHDF5_SHIM_H

// Swift cannot import HDF5's id macros (they expand to H5open() plus a global), nor use the
// `*_g` globals directly under Swift 6's concurrency checks; these functions return them.
// The zstd filter (id 32015, the id hdf5plugin registers) lives here too, in C, because
// libhdf5 calls it through a C function pointer.

#include <hdf5.h>
#include <zstd.h>
#include <zstd_errors.h>
#include <stdio.h>
#include <string.h>

static inline hid_t fs_H5P_DEFAULT(void) { return H5P_DEFAULT; }
static inline hid_t fs_H5E_DEFAULT(void) { return H5E_DEFAULT; }
static inline hid_t fs_H5S_ALL(void) { return H5S_ALL; }
static inline H5S_seloper_t fs_H5S_SELECT_SET(void) { return H5S_SELECT_SET; }

static inline unsigned fs_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned fs_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned fs_H5F_ACC_EXCL(void) { return H5F_ACC_EXCL; }

static inline hid_t fs_H5P_DATASET_CREATE(void) { return H5P_DATASET_CREATE; }
static inline hid_t fs_H5P_FILE_ACCESS(void) { return H5P_FILE_ACCESS; }
static inline hid_t fs_H5P_FILE_CREATE(void) { return H5P_FILE_CREATE; }
static inline hid_t fs_H5P_LINK_CREATE(void) { return H5P_LINK_CREATE; }

static inline hid_t fs_H5T_NATIVE_DOUBLE(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t fs_H5T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t fs_H5T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t fs_H5T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t fs_H5T_NATIVE_INT16(void) { return H5T_NATIVE_INT16; }
static inline hid_t fs_H5T_NATIVE_INT8(void) { return H5T_NATIVE_INT8; }
static inline hid_t fs_H5T_NATIVE_UINT8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t fs_H5T_NATIVE_UINT16(void) { return H5T_NATIVE_UINT16; }

static inline hid_t fs_H5T_IEEE_F64LE(void) { return H5T_IEEE_F64LE; }
static inline hid_t fs_H5T_IEEE_F32LE(void) { return H5T_IEEE_F32LE; }
static inline hid_t fs_H5T_STD_I64LE(void) { return H5T_STD_I64LE; }
static inline hid_t fs_H5T_STD_I32LE(void) { return H5T_STD_I32LE; }
static inline hid_t fs_H5T_STD_I16LE(void) { return H5T_STD_I16LE; }
static inline hid_t fs_H5T_STD_I8LE(void) { return H5T_STD_I8LE; }
static inline hid_t fs_H5T_STD_U8LE(void) { return H5T_STD_U8LE; }
static inline hid_t fs_H5T_STD_U16LE(void) { return H5T_STD_U16LE; }
static inline hid_t fs_H5T_C_S1(void) { return H5T_C_S1; }
static inline size_t fs_H5T_VARIABLE(void) { return H5T_VARIABLE; }

/// A new (caller-closed) little-endian IEEE binary16 type, built as h5py builds its float16:
/// HDF5 1.10 predefines no 16-bit float. Returns a negative id on failure.
static inline hid_t fs_create_ieee_f16le(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0) return t;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 || H5Tset_ebias(t, 15) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/// A new (caller-closed) h5py bool type: an enum over int8 with FALSE = 0, TRUE = 1.
static inline hid_t fs_create_bool_enum(void) {
    hid_t t = H5Tenum_create(H5T_NATIVE_INT8);
    if (t < 0) return t;
    signed char f = 0, tr = 1;
    if (H5Tenum_insert(t, "FALSE", &f) < 0 || H5Tenum_insert(t, "TRUE", &tr) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/// Splits 32 bytes (a, b) into their 16 even and 16 odd bytes.
static inline void fs_split_bytes(__m128i a, __m128i b, __m128i *even, __m128i *odd) {
    const __m128i low = _mm_set1_epi16(0x00FF);
    *even = _mm_packus_epi16(_mm_and_si128(a, low), _mm_and_si128(b, low));
    *odd = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
}
#endif

/// HDF5's shuffle filter (H5Zshuffle.c) on `n` whole elements of `size` bytes: byte j of element i
/// goes to j * n + i. 2- and 4-byte elements (nearly every byte fineshard writes) go 16 at a time
/// through SSE2 byte splits where the compiler has them; the rest byte by byte.
static inline void fs_shuffle(const unsigned char *restrict src, unsigned char *restrict dst, size_t n, size_t size) {
    size_t i = 0;
#if defined(__SSE2__)
    if (size == 2) {
        for (; i + 16 <= n; i += 16) {
            __m128i even, odd;
            fs_split_bytes(_mm_loadu_si128((const __m128i *)(src + 2 * i)),
                           _mm_loadu_si128((const __m128i *)(src + 2 * i + 16)), &even, &odd);
            _mm_storeu_si128((__m128i *)(dst + i), even);
            _mm_storeu_si128((__m128i *)(dst + n + i), odd);
        }
    } else if (size == 4) {
        for (; i + 16 <= n; i += 16) {
            const unsigned char *p = src + 4 * i;
            __m128i e1, o1, e2, o2, b0, b1, b2, b3;
            // Bytes 0/2 and 1/3 of elements 0-7, then of elements 8-15; then split each again.
            fs_split_bytes(_mm_loadu_si128((const __m128i *)p), _mm_loadu_si128((const __m128i *)(p + 16)), &e1, &o1);
            fs_split_bytes(_mm_loadu_si128((const __m128i *)(p + 32)), _mm_loadu_si128((const __m128i *)(p + 48)), &e2, &o2);
            fs_split_bytes(e1, e2, &b0, &b2);
            fs_split_bytes(o1, o2, &b1, &b3);
            _mm_storeu_si128((__m128i *)(dst + i), b0);
            _mm_storeu_si128((__m128i *)(dst + n + i), b1);
            _mm_storeu_si128((__m128i *)(dst + 2 * n + i), b2);
            _mm_storeu_si128((__m128i *)(dst + 3 * n + i), b3);
        }
    }
#endif
    for (size_t j = 0; j < size; j++)
        for (size_t k = i; k < n; k++) dst[j * n + k] = src[k * size + j];
}

#define FS_ZSTD_FILTER_ID 32015

/// The size a decompressed chunk must have (the dataset's chunk bytes), set before each read
/// under fineshard's HDF5 lock; 0 when unknown. libhdf5 does not check a filter's output size,
/// so a frame that declares a wrong size would otherwise be accepted as data.
/// The state lives in function-local statics (Swift does not emit a header's file-scope
/// statics), and each Swift object file gets its own copy of a static inline function: call
/// these, and register the filter, from one Swift file only (HDF5Library.swift).
static inline size_t *fs_zstd_expected_slot(void) {
    static size_t expected = 0;
    return &expected;
}

/// Why the filter last failed, for the error fineshard throws (libhdf5 only says "filter failed").
static inline char *fs_zstd_error_slot(void) {
    static char message[256];
    return message;
}

/// Records zstd's reason `code` for the error fineshard throws; a failed frame checksum is spelled out.
static inline void fs_zstd_fail(size_t code) {
    if (ZSTD_getErrorCode(code) == ZSTD_error_checksum_wrong)
        snprintf(fs_zstd_error_slot(), 256, "its zstd frame checksum does not match (zstd: %s)", ZSTD_getErrorName(code));
    else
        snprintf(fs_zstd_error_slot(), 256, "zstd: %s", ZSTD_getErrorName(code));
}

static inline void fs_zstd_expect(size_t bytes) {
    *fs_zstd_expected_slot() = bytes;
    fs_zstd_error_slot()[0] = 0;
}

static inline const char *fs_zstd_last_error(void) { return fs_zstd_error_slot(); }

/// Decompresses one zstd frame of unknown content size by streaming into a growing buffer of at
/// most `limit` bytes (0: no limit).
/// Returns the decompressed size, or 0 on failure (with *out freed).
static inline size_t fs_zstd_stream_decompress(const void *src, size_t srcSize, void **out, size_t limit) {
    ZSTD_DStream *ds = ZSTD_createDStream();
    if (ds == NULL) return 0;
    size_t cap = srcSize * 4 + 1024;
    void *dst = H5allocate_memory(cap, 0);
    if (dst == NULL) { ZSTD_freeDStream(ds); return 0; }
    ZSTD_inBuffer in = { src, srcSize, 0 };
    ZSTD_outBuffer ob = { dst, cap, 0 };
    for (;;) {
        size_t r = ZSTD_decompressStream(ds, &ob, &in);
        if (ZSTD_isError(r)) {
            fs_zstd_fail(r);
            break;
        }
        if (r == 0) {
            ZSTD_freeDStream(ds);
            *out = ob.dst;
            return ob.pos;
        }
        if (ob.pos == ob.size) {
            size_t newCap = ob.size * 2;
            if (limit > 0 && ob.size >= limit) {
                snprintf(fs_zstd_error_slot(), 256, "zstd: frame decodes to more than the %zu-byte chunk", limit);
                break;
            }
            if (limit > 0 && newCap > limit) newCap = limit;
            void *bigger = H5resize_memory(ob.dst, newCap);
            if (bigger == NULL) break;
            ob.dst = bigger;
            ob.size = newCap;
        } else if (in.pos == in.size) {
            break;  // input ended inside a frame: truncated data
        }
    }
    H5free_memory(ob.dst);
    ZSTD_freeDStream(ds);
    return 0;
}

/// The HDF5 filter callback. Compressed frames carry their content size (ZSTD_compress writes
/// it), which hdf5plugin's decoder requires. Returning 0 makes libhdf5 report a filter failure.
static inline size_t fs_zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                                    size_t nbytes, size_t *buf_size, void **buf) {
    if (flags & H5Z_FLAG_REVERSE) {
        size_t expected = *fs_zstd_expected_slot();
        unsigned long long n = ZSTD_getFrameContentSize(*buf, nbytes);
        if (n == ZSTD_CONTENTSIZE_ERROR) {
            snprintf(fs_zstd_error_slot(), 256, "zstd: the %zu-byte chunk is not a zstd frame", nbytes);
            return 0;
        }
        if (n != ZSTD_CONTENTSIZE_UNKNOWN && expected > 0 && n != expected) {
            snprintf(fs_zstd_error_slot(), 256, "zstd: frame declares %llu bytes but the chunk holds %zu", n, expected);
            return 0;
        }
        if (n == ZSTD_CONTENTSIZE_UNKNOWN) {
            void *out = NULL;
            size_t got = fs_zstd_stream_decompress(*buf, nbytes, &out, expected);
            if (got == 0 || out == NULL) return 0;
            if (expected > 0 && got != expected) {
                snprintf(fs_zstd_error_slot(), 256, "zstd: frame decodes to %zu bytes but the chunk holds %zu", got, expected);
                H5free_memory(out);
                return 0;
            }
            H5free_memory(*buf);
            *buf = out;
            *buf_size = got;
            return got;
        }
        size_t cap = n == 0 ? 1 : (size_t)n;
        void *out = H5allocate_memory(cap, 0);
        if (out == NULL) return 0;
        size_t r = ZSTD_decompress(out, (size_t)n, *buf, nbytes);
        if (ZSTD_isError(r) || r != (size_t)n) {
            if (ZSTD_isError(r)) fs_zstd_fail(r);
            else snprintf(fs_zstd_error_slot(), 256, "zstd: short frame");
            H5free_memory(out);
            return 0;
        }
        H5free_memory(*buf);
        *buf = out;
        *buf_size = cap;
        return r;
    }
    int level = cd_nelmts > 0 ? (int)cd_values[0] : ZSTD_CLEVEL_DEFAULT;
    size_t cap = ZSTD_compressBound(nbytes);
    void *out = H5allocate_memory(cap, 0);
    if (out == NULL) return 0;
    size_t r = ZSTD_compress(out, cap, *buf, nbytes, level);
    if (ZSTD_isError(r)) { H5free_memory(out); return 0; }
    H5free_memory(*buf);
    *buf = out;
    *buf_size = cap;
    return r;
}

/// Registers the zstd filter with libhdf5 (idempotent in libhdf5: a second call replaces it).
static inline herr_t fs_register_zstd(void) {
    H5Z_class2_t cls;
    memset(&cls, 0, sizeof cls);
    cls.version = H5Z_CLASS_T_VERS;
    cls.id = FS_ZSTD_FILTER_ID;
    cls.encoder_present = 1;
    cls.decoder_present = 1;
    cls.name = "zstd";
    cls.filter = fs_zstd_filter;
    return H5Zregister(&cls);
}

#endif
