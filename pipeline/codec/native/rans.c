/*
 * latent-shards: an encoder and a bounds-checked decoder for the rANS streams of CompressAI's coder.
 *
 * Stream format (CompressAI 1.2 `compressai.ans`, itself on Fabian Giesen's 64-bit rANS):
 *   - 64-bit state, renormalised with 32-bit little-endian words, lower bound 2^31;
 *   - 16-bit probability precision: each symbol's table is a CDF over [0, 2^16];
 *   - the last entry of a table is an escape: the value follows in 4-bit "bypass" chunks
 *     (a chunk count, continued while it reads 15, then the chunks, least significant first),
 *     zig-zag mapped below/above the table's range.
 *
 * Why a second coder: CompressAI's binding converts every symbol, index and CDF table from
 * Python lists on each call, searches each table linearly, holds the GIL, reads past the end
 * of a damaged stream and writes before the start of its output buffer when escapes make a
 * stream longer than one word per symbol. This one takes numpy buffers (no marshalling),
 * searches by bisection, is called through ctypes (which releases the GIL), and stays inside
 * its buffers. The encoder writes CompressAI's bytes exactly and the decoder returns its
 * symbols exactly (tests compare both over many images, every model family, forced escapes).
 *
 * Plain C99, no Python headers; linked into the extension module pipeline.codec._rans at install
 * time (setup.py, native/module.c) and called through ctypes by pipeline/codec/fast_rans.py.
 * Assumes a little-endian host for the encoder's output words (x86-64, aarch64).
 */
#include <stddef.h>
#include <stdint.h>

#define PRECISION 16
#define BYPASS_BITS 4
#define BYPASS_MAX ((1 << BYPASS_BITS) - 1)
#define RANS_L (1ull << 31)
#define LUT_SHIFT 8 /* decoder start table: one entry per 2^8 of the 2^16 cumulative range */
#define LUT_SIZE (1 << (PRECISION - LUT_SHIFT))

enum {
    LS_OK = 0,
    LS_SHORT_STREAM = -1, /* the stream ended before every symbol was decoded */
    LS_BAD_INDEX = -2,    /* a CDF index outside the tables */
    LS_BAD_BYPASS = -3,   /* an escaped value too long to be genuine */
};

typedef struct {
    uint64_t x;
    const uint8_t *p;
    const uint8_t *end;
} state_t;

static inline int read_word(state_t *s, uint32_t *w) {
    if (s->end - s->p < 4) return LS_SHORT_STREAM;
    const uint8_t *p = s->p;
    *w = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    s->p += 4;
    return LS_OK;
}

static inline int renorm(state_t *s) {
    if (s->x < RANS_L) {
        uint32_t w;
        if (read_word(s, &w)) return LS_SHORT_STREAM;
        s->x = (s->x << 32) | w;
    }
    return LS_OK;
}

static inline int get_bits(state_t *s, uint32_t nbits, int32_t *val) {
    *val = (int32_t)(s->x & ((1u << nbits) - 1));
    s->x >>= nbits;
    return renorm(s);
}

/*
 * Decode `n` symbols of `stream` whose CDF tables are `indexes[i]`.
 *
 * cdfs:      [ntables, stride] int32, row t holds sizes[t] increasing entries, 0 ... 2^16
 * sizes:     [ntables] entries used per row (the last symbol, sizes[t] - 2, is the escape)
 * offsets:   [ntables] value of symbol 0
 * starts:    [ntables, LUT_SIZE] where to start looking: row t, entry j holds the last k in
 *            [0, sizes[t] - 2] with cdf[k] <= j << LUT_SHIFT (a lower bound of the answer for
 *            every cum in bucket j); NULL searches by bisection alone
 * out:       [n] decoded values (symbol + offset)
 * Returns LS_OK or a negative error code; `out` is then incomplete.
 */
int ls_rans_decode(const uint8_t *stream, int64_t nbytes, const int32_t *indexes, int64_t n,
                   const int32_t *cdfs, int32_t stride, const int32_t *sizes,
                   const int32_t *offsets, int32_t ntables, const uint16_t *starts, int32_t *out) {
    state_t s = {0, stream, stream + nbytes};
    uint32_t lo, hi;
    if (read_word(&s, &lo) || read_word(&s, &hi)) return LS_SHORT_STREAM;
    s.x = (uint64_t)lo | ((uint64_t)hi << 32);
    const uint64_t mask = (1ull << PRECISION) - 1;

    for (int64_t i = 0; i < n; ++i) {
        const int32_t t = indexes[i];
        if (t < 0 || t >= ntables) return LS_BAD_INDEX;
        const int32_t *cdf = cdfs + (int64_t)t * stride;
        const int32_t size = sizes[t];
        if (size < 2 || size > stride) return LS_BAD_INDEX;
        const int32_t max_value = size - 2;
        const uint32_t cum = (uint32_t)(s.x & mask);

        /* the last k in [0, size - 2] with cdf[k] <= cum (cdf[0] == 0 <= cum < 2^16 == cdf[size - 1]) */
        int32_t a;
        if (starts) {
            /* from the bucket's lower bound, step up: most symbols are found at once */
            a = starts[(int64_t)t * LUT_SIZE + (cum >> LUT_SHIFT)];
            if (a > size - 2) return LS_BAD_INDEX;
            while (a < size - 2 && (uint32_t)cdf[a + 1] <= cum) ++a;
        } else {
            int32_t b = size - 1;
            a = 0;
            while (b - a > 1) {
                const int32_t m = (a + b) >> 1;
                if ((uint32_t)cdf[m] <= cum) a = m; else b = m;
            }
        }
        const uint64_t start = (uint64_t)cdf[a], freq = (uint64_t)(cdf[a + 1] - cdf[a]);
        s.x = freq * (s.x >> PRECISION) + (s.x & mask) - start;
        if (renorm(&s)) return LS_SHORT_STREAM;

        int64_t value = a;
        if (value == max_value) {
            int32_t v, count;
            if (get_bits(&s, BYPASS_BITS, &v)) return LS_SHORT_STREAM;
            count = v;
            while (v == BYPASS_MAX) {
                if (get_bits(&s, BYPASS_BITS, &v)) return LS_SHORT_STREAM;
                count += v;
                if (count > 7) return LS_BAD_BYPASS;
            }
            /* a genuine escape has at most 7 chunks (the encoder refuses 2^28 and more) */
            if (count > 7) return LS_BAD_BYPASS;
            uint32_t raw = 0;
            for (int32_t j = 0; j < count; ++j) {
                if (get_bits(&s, BYPASS_BITS, &v)) return LS_SHORT_STREAM;
                raw |= (uint32_t)v << (j * BYPASS_BITS);
            }
            value = (int64_t)(raw >> 1);
            if (raw & 1u) value = -value - 1; else value += max_value;
        }
        value += offsets[t];
        if (value < INT32_MIN || value > INT32_MAX) return LS_BAD_BYPASS;
        out[i] = (int32_t)value;
    }
    return LS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Encoder                                                                                   */
/* ---------------------------------------------------------------------------------------- */

enum { LS_BAD_SYMBOL_TABLE = -4, LS_OUT_OF_SPACE = -5, LS_VALUE_RANGE = -6 };

typedef struct {
    uint64_t x;
    uint32_t *ptr;   /* next word is written at ptr - 1 (the stream grows downwards) */
    uint32_t *begin; /* never written below this */
} enc_t;

static inline int emit(enc_t *e, uint64_t *x) {
    if (e->ptr == e->begin) return LS_OUT_OF_SPACE;
    *--e->ptr = (uint32_t)*x;
    *x >>= 32;
    return LS_OK;
}

static inline int enc_put(enc_t *e, uint32_t start, uint32_t freq) {
    uint64_t x = e->x;
    const uint64_t x_max = ((RANS_L >> PRECISION) << 32) * freq;
    if (x >= x_max && emit(e, &x)) return LS_OUT_OF_SPACE;
    e->x = ((x / freq) << PRECISION) + (x % freq) + start;
    return LS_OK;
}

static inline int enc_put_bits(enc_t *e, uint32_t val, uint32_t nbits) {
    uint64_t x = e->x;
    const uint64_t freq = 1u << (16 - nbits);
    const uint64_t x_max = ((RANS_L >> 16) << 32) * freq;
    if (x >= x_max && emit(e, &x)) return LS_OUT_OF_SPACE;
    e->x = (x << nbits) | val;
    return LS_OK;
}

/*
 * Encode `n` values with the tables `indexes[i]` into the END of `buf` (`capacity` words).
 * On success returns the number of words written; they end at buf + capacity.
 * The result is CompressAI's `encode_with_indexes` output, byte for byte.
 */
int64_t ls_rans_encode(const int32_t *values, const int32_t *indexes, int64_t n,
                       const int32_t *cdfs, int32_t stride, const int32_t *sizes,
                       const int32_t *offsets, int32_t ntables, uint32_t *buf, int64_t capacity) {
    enc_t e = {RANS_L, buf + capacity, buf};
    for (int64_t i = n; i > 0; --i) {
        const int32_t t = indexes[i - 1];
        if (t < 0 || t >= ntables) return LS_BAD_INDEX;
        const int32_t *cdf = cdfs + (int64_t)t * stride;
        const int32_t size = sizes[t];
        if (size < 2 || size > stride) return LS_BAD_INDEX;
        const int32_t max_value = size - 2;
        int64_t value = (int64_t)values[i - 1] - offsets[t];
        if (value < 0 || value >= max_value) {
            /* escape: zig-zag the value, then 4-bit chunks, most significant pushed first */
            uint64_t raw = value < 0 ? (uint64_t)(-2 * value - 1) : (uint64_t)(2 * (value - max_value));
            /* CompressAI's int32 chunk loop is undefined from 2^28 on (a shift by 32) */
            if (raw >= (1u << 28)) return LS_VALUE_RANGE;
            int32_t count = 0;
            while ((raw >> (count * BYPASS_BITS)) != 0) ++count;
            for (int32_t j = count - 1; j >= 0; --j)
                if (enc_put_bits(&e, (uint32_t)(raw >> (j * BYPASS_BITS)) & BYPASS_MAX, BYPASS_BITS))
                    return LS_OUT_OF_SPACE;
            int32_t c = count;
            while (c >= BYPASS_MAX) {
                c -= BYPASS_MAX;
                if (enc_put_bits(&e, BYPASS_MAX, BYPASS_BITS)) return LS_OUT_OF_SPACE;
            }
            if (enc_put_bits(&e, (uint32_t)c, BYPASS_BITS)) return LS_OUT_OF_SPACE;
            value = max_value;
        }
        const int32_t lo = cdf[value], hi = cdf[value + 1];
        if (hi <= lo) return LS_BAD_SYMBOL_TABLE;
        if (enc_put(&e, (uint32_t)lo, (uint32_t)(hi - lo))) return LS_OUT_OF_SPACE;
    }
    /* flush: the 64-bit state as two words, low word first */
    if (e.ptr - e.begin < 2) return LS_OUT_OF_SPACE;
    e.ptr -= 2;
    e.ptr[0] = (uint32_t)e.x;
    e.ptr[1] = (uint32_t)(e.x >> 32);
    return (int64_t)(buf + capacity - e.ptr);
}
