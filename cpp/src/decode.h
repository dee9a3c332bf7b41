// Encoded bytes -> upright 8-bit RGB, the way classifier.preprocessing.decode_image does it with Pillow.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace classifier {

// The bytes are not an image we serve; the message is shown to the user (a 4xx on a server).
struct DecodeError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Row-major, 3 bytes per pixel.
struct RgbImage {
    int width = 0;
    int height = 0;
    std::vector<uint8_t> pixels;
};

struct DecodeOptions {
    int64_t max_pixels = 40'000'000;
    uint8_t background[3] = {255, 255, 255};  // alpha is composited onto this
};

// JPEG (grey, YCbCr/RGB, CMYK/YCCK) and PNG (every colour type and bit depth), with the EXIF/XMP
// orientation applied. Throws DecodeError for anything else.
RgbImage decode_image(const std::vector<uint8_t>& data, const DecodeOptions& options);

// The EXIF Orientation (1..8) in a TIFF-structured block ("II*\0" or "MM\0*"), or 0 when absent.
int exif_orientation(const uint8_t* tiff, size_t size);

// Apply an EXIF orientation (2..8; anything else is a no-op) like Pillow's ImageOps.exif_transpose.
RgbImage apply_orientation(RgbImage img, int orientation);

}  // namespace classifier
