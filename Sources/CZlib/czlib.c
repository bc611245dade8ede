#include "CZlib.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct czlib_inflater {
    z_stream stream;
    const uint8_t *input;
    size_t length;
    size_t offset;   // input bytes handed to zlib so far
    int in_member;   // 1 while inside a gzip member
    int done;
};

// zlib counts in uInt; feed the input in slices it can hold.
static void feed(czlib_inflater *z) {
    if (z->stream.avail_in == 0 && z->offset < z->length) {
        size_t n = z->length - z->offset;
        if (n > (size_t)UINT_MAX / 2) n = (size_t)UINT_MAX / 2;
        z->stream.next_in = (Bytef *)(z->input + z->offset);
        z->stream.avail_in = (uInt)n;
        z->offset += n;
    }
}

static size_t remaining(const czlib_inflater *z) {
    return (z->length - z->offset) + z->stream.avail_in;
}

czlib_inflater *czlib_inflater_create(const uint8_t *input, size_t length) {
    czlib_inflater *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    z->input = input;
    z->length = length;
    // 16 + MAX_WBITS: gzip wrapper only, so a raw zlib stream is refused as corrupt.
    if (inflateInit2(&z->stream, 16 + MAX_WBITS) != Z_OK) { free(z); return NULL; }
    z->in_member = 1;
    return z;
}

void czlib_inflater_destroy(czlib_inflater *z) {
    if (!z) return;
    inflateEnd(&z->stream);
    free(z);
}

size_t czlib_inflater_consumed(const czlib_inflater *z) { return z->length - remaining(z); }

const char *czlib_inflater_message(const czlib_inflater *z) {
    return (z && z->stream.msg) ? z->stream.msg : "";
}

// After a member ends: another member follows only if the next bytes are a gzip magic;
// anything else (typically zero padding) ends the stream, as gzip -dc does with a warning.
static int next_member(czlib_inflater *z) {
    feed(z);
    if (remaining(z) == 0) return CZLIB_END;
    if (z->stream.avail_in >= 2 && z->stream.next_in[0] == 0x1f && z->stream.next_in[1] == 0x8b) {
        if (inflateReset(&z->stream) != Z_OK) return CZLIB_CORRUPT;
        z->in_member = 1;
        return CZLIB_OK;
    }
    return CZLIB_END;
}

int czlib_inflater_read(czlib_inflater *z, uint8_t *output, size_t capacity, size_t *produced) {
    *produced = 0;
    if (z->done) return CZLIB_END;
    while (*produced < capacity) {
        if (!z->in_member) {
            int r = next_member(z);
            if (r != CZLIB_OK) { z->done = (r == CZLIB_END); return r; }
        }
        feed(z);
        size_t want = capacity - *produced;
        if (want > (size_t)UINT_MAX / 2) want = (size_t)UINT_MAX / 2;
        z->stream.next_out = output + *produced;
        z->stream.avail_out = (uInt)want;
        int r = inflate(&z->stream, Z_NO_FLUSH);
        *produced += want - z->stream.avail_out;
        if (r == Z_STREAM_END) { z->in_member = 0; continue; }
        if (r == Z_MEM_ERROR) return CZLIB_NOMEM;
        if (r == Z_NEED_DICT || r == Z_DATA_ERROR || r == Z_STREAM_ERROR) return CZLIB_CORRUPT;
        if (r == Z_BUF_ERROR) {
            // No progress possible: either out of input inside the member, or output is full.
            if (z->stream.avail_out == 0) continue;
            if (remaining(z) == 0) return CZLIB_TRUNCATED;
        }
        if (z->stream.avail_in == 0 && z->offset >= z->length && z->stream.avail_out > 0) {
            return CZLIB_TRUNCATED;
        }
    }
    return CZLIB_OK;
}

struct czlib_deflater {
    z_stream stream;
    uint8_t chunk[1 << 18];
};

static czlib_deflater *deflater_create(int level, int window_bits) {
    czlib_deflater *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    if (deflateInit2(&z->stream, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

czlib_deflater *czlib_deflater_create(int level) { return deflater_create(level, 16 + MAX_WBITS); }

czlib_deflater *czlib_deflater_create_zlib(int level) { return deflater_create(level, MAX_WBITS); }

void czlib_deflater_destroy(czlib_deflater *z) {
    if (!z) return;
    deflateEnd(&z->stream);
    free(z);
}

int czlib_deflater_write(czlib_deflater *z, const uint8_t *input, size_t length, int finish,
                         czlib_sink sink, void *context) {
    size_t offset = 0;
    for (;;) {
        if (z->stream.avail_in == 0 && offset < length) {
            size_t n = length - offset;
            if (n > (size_t)UINT_MAX / 2) n = (size_t)UINT_MAX / 2;
            z->stream.next_in = (Bytef *)(input + offset);
            z->stream.avail_in = (uInt)n;
            offset += n;
        }
        int last = finish && offset >= length;
        z->stream.next_out = z->chunk;
        z->stream.avail_out = sizeof z->chunk;
        int r = deflate(&z->stream, last ? Z_FINISH : Z_NO_FLUSH);
        if (r == Z_STREAM_ERROR) return CZLIB_CORRUPT;
        size_t n = sizeof z->chunk - z->stream.avail_out;
        if (n > 0) {
            int s = sink(context, z->chunk, n);
            if (s != 0) return s;
        }
        if (last && r == Z_STREAM_END) return CZLIB_OK;
        if (!last && z->stream.avail_in == 0 && offset >= length && z->stream.avail_out > 0) return CZLIB_OK;
    }
}

uint32_t czlib_crc32(uint32_t crc, const uint8_t *bytes, size_t length) {
    while (length > 0) {
        uInt n = length > (size_t)UINT_MAX / 2 ? (uInt)(UINT_MAX / 2) : (uInt)length;
        crc = (uint32_t)crc32(crc, bytes, n);
        bytes += n;
        length -= n;
    }
    return crc;
}
