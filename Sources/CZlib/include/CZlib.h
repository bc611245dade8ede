// Narrow gzip API over zlib: the only place zlib is seen. Swift's MedicalImaging target
// streams NIfTI data through these calls, so no zlib type or macro crosses into Swift.
#ifndef CZLIB_H
#define CZLIB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    CZLIB_OK = 0,          // progress made; call again for more
    CZLIB_END = 1,         // the last gzip member ended and no input is left
    CZLIB_CORRUPT = -1,    // not gzip, bad deflate data, or bad CRC/length trailer
    CZLIB_TRUNCATED = -2,  // the input ended inside a member
    CZLIB_NOMEM = -3,
};

/// Gzip decompressor over an in-memory input. Concatenated members (as `gzip -dc` accepts)
/// are read as one stream; trailing zero padding after the last member is ignored.
typedef struct czlib_inflater czlib_inflater;

czlib_inflater *czlib_inflater_create(const uint8_t *input, size_t length);
void czlib_inflater_destroy(czlib_inflater *inflater);
/// Fills `output` with up to `capacity` bytes; `*produced` is what was written. Returns CZLIB_OK
/// when `capacity` bytes were produced, CZLIB_END when the stream ended (possibly short), or an error.
int czlib_inflater_read(czlib_inflater *inflater, uint8_t *output, size_t capacity, size_t *produced);
/// Bytes of compressed input consumed so far.
size_t czlib_inflater_consumed(const czlib_inflater *inflater);
/// zlib's message for the last error, or "".
const char *czlib_inflater_message(const czlib_inflater *inflater);

/// Gzip compressor producing one member.
typedef struct czlib_deflater czlib_deflater;

czlib_deflater *czlib_deflater_create(int level);
/// A compressor producing a zlib stream (RFC 1950, as PNG's IDAT chunks hold) instead of gzip.
czlib_deflater *czlib_deflater_create_zlib(int level);
void czlib_deflater_destroy(czlib_deflater *deflater);
/// Compresses `input` (all of it is consumed before the call returns CZLIB_OK) and hands every
/// compressed chunk to `sink`; `finish` != 0 writes the trailer. `sink` returns 0 on success;
/// a nonzero return aborts with that value.
typedef int (*czlib_sink)(void *context, const uint8_t *bytes, size_t length);
int czlib_deflater_write(czlib_deflater *deflater, const uint8_t *input, size_t length, int finish,
                         czlib_sink sink, void *context);

/// CRC-32 (used by tests to build deliberately broken files).
uint32_t czlib_crc32(uint32_t crc, const uint8_t *bytes, size_t length);

#ifdef __cplusplus
}
#endif
#endif
