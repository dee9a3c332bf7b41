// Decoding with the codecs Pillow itself wraps (libjpeg-turbo, and zlib through libpng), followed by
// the same orientation and mode conversions as classifier.preprocessing.decode_image / to_rgb.
// Every integer formula below is Pillow's, so the pixels are identical, not merely close
// (tests/cpp/test_parity.py checks each mode byte for byte).
#include "decode.h"

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include <csetjmp>
#include <cstring>
#include <string_view>

namespace classifier {
namespace {

constexpr uint8_t kJpegMagic[] = {0xFF, 0xD8, 0xFF};
constexpr uint8_t kPngMagic[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

bool starts_with(const std::vector<uint8_t>& data, const uint8_t* magic, size_t n) {
    return data.size() >= n && std::memcmp(data.data(), magic, n) == 0;
}

void check_size(int64_t width, int64_t height, const DecodeOptions& options) {
    if (width < 1 || height < 1) {
        throw DecodeError("image has no pixels (" + std::to_string(width) + "x" + std::to_string(height) + ")");
    }
    if (width * height > options.max_pixels) {
        throw DecodeError("image is " + std::to_string(width) + "x" + std::to_string(height) + " = " +
                          std::to_string(width * height) + " pixels, over the limit of " +
                          std::to_string(options.max_pixels));
    }
}

// Pillow's Image.alpha_composite of an RGBA pixel over an opaque background (AlphaComposite.c:
// 7 extra bits of precision, divisions by 255 done as shifts with rounding).
inline uint32_t div255_shift(uint32_t v) { return ((v >> 8) + v) >> 8; }

void composite_over(const uint8_t* rgba, const uint8_t* background, uint8_t* out) {
    const uint32_t a = rgba[3];
    if (a == 0) {
        out[0] = background[0], out[1] = background[1], out[2] = background[2];
        return;
    }
    constexpr uint32_t kBits = 7;
    const uint32_t blend = 255 * (255 - a);  // background alpha is 255
    const uint32_t outa255 = a * 255 + blend;
    const uint32_t coef1 = a * 255 * 255 * (1u << kBits) / outa255;
    const uint32_t coef2 = 255 * (1u << kBits) - coef1;
    for (int c = 0; c < 3; ++c) {
        const uint32_t tmp = rgba[c] * coef1 + background[c] * coef2;
        out[c] = static_cast<uint8_t>(div255_shift(tmp + (0x80u << kBits)) >> kBits);
    }
}

// Pillow's cmyk2rgb (Convert.c) after its "CMYK;I" unpacking, which inverts every channel.
void cmyk_to_rgb(const uint8_t* inverted_cmyk, uint8_t* out) {
    const int nk = inverted_cmyk[3];  // 255 - (255 - k)
    for (int c = 0; c < 3; ++c) {
        const int ink = 255 - inverted_cmyk[c];
        const int tmp = ink * nk + 128;
        const int v = nk - (((tmp >> 8) + tmp) >> 8);
        out[c] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

// Pillow takes the orientation from EXIF, and only when EXIF has none, from the first
// `tiff:Orientation="N"` or `<tiff:Orientation>N` in the XMP packet (Image.getexif).
int xmp_orientation(std::string_view xmp) {
    constexpr std::string_view kTag = "tiff:Orientation";
    for (size_t at = xmp.find(kTag); at != std::string_view::npos; at = xmp.find(kTag, at + 1)) {
        size_t p = at + kTag.size();
        if (xmp.substr(p, 2) == "=\"") {
            p += 2;
        } else if (xmp.substr(p, 1) == ">") {
            p += 1;
        } else {
            continue;
        }
        if (p < xmp.size() && xmp[p] >= '0' && xmp[p] <= '9') return xmp[p] - '0';
    }
    return 0;
}

int choose_orientation(int exif, std::string_view xmp) { return exif != 0 ? exif : xmp_orientation(xmp); }

// ----------------------------------------------------------------------------------------- JPEG

struct JpegErrors {
    jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
    auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, errors->message);
    std::longjmp(errors->jump, 1);
}

// libjpeg only warns about a file that ends early and pads it with grey; Pillow refuses it
// ("image file is truncated"), so do the same.
void jpeg_warning(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
}

RgbImage decode_jpeg(const std::vector<uint8_t>& data, const DecodeOptions& options) {
    jpeg_decompress_struct cinfo;
    JpegErrors errors;
    cinfo.err = jpeg_std_error(&errors.mgr);
    errors.mgr.error_exit = jpeg_fail;
    errors.mgr.emit_message = jpeg_warning;
    RgbImage img;
    std::vector<uint8_t> row;
    int orientation = 0;
    bool size_ok = false;
    if (setjmp(errors.jump)) {
        jpeg_destroy_decompress(&cinfo);
        if (!size_ok) throw DecodeError(std::string("JPEG header could not be read (") + errors.message + ")");
        throw DecodeError(std::string("image could not be decoded (") + errors.message + "); is the file truncated?");
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data.data(), static_cast<unsigned long>(data.size()));
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    check_size(cinfo.image_width, cinfo.image_height, options);
    size_ok = true;

    // Pillow concatenates every Exif APP1 segment but reads tags from the first's IFD0.
    int exif = 0;
    std::string_view xmp;
    bool seen_exif = false;
    constexpr std::string_view kExif("Exif\0\0", 6), kXmp("http://ns.adobe.com/xap/1.0/\0", 29);
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
        std::string_view body(reinterpret_cast<const char*>(m->data), m->data_length);
        if (!seen_exif && body.substr(0, 6) == kExif) {
            exif = exif_orientation(m->data + 6, m->data_length - 6);
            seen_exif = true;
        } else if (body.substr(0, kXmp.size()) == kXmp) {
            xmp = body.substr(kXmp.size());  // Pillow keeps the last one
        }
    }
    orientation = choose_orientation(exif, xmp);

    const int components = cinfo.num_components;
    if (components == 1) {
        cinfo.out_color_space = JCS_GRAYSCALE;
    } else if (components == 3) {
        cinfo.out_color_space = JCS_RGB;
    } else if (components == 4) {
        cinfo.out_color_space = JCS_CMYK;  // libjpeg turns YCCK into CMYK
    } else {
        throw DecodeError("cannot handle " + std::to_string(components) + "-layer JPEG images");
    }
    // Pillow leaves the decoder defaults: accurate integer IDCT, fancy upsampling, block smoothing.
    jpeg_start_decompress(&cinfo);
    img.width = static_cast<int>(cinfo.output_width);
    img.height = static_cast<int>(cinfo.output_height);
    img.pixels.resize(static_cast<size_t>(img.width) * img.height * 3);
    row.resize(static_cast<size_t>(img.width) * cinfo.output_components);
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t* out = img.pixels.data() + static_cast<size_t>(cinfo.output_scanline) * img.width * 3;
        if (components == 3) {
            JSAMPROW rows[1] = {out};
            jpeg_read_scanlines(&cinfo, rows, 1);
            continue;
        }
        JSAMPROW rows[1] = {row.data()};
        jpeg_read_scanlines(&cinfo, rows, 1);
        for (int x = 0; x < img.width; ++x) {
            if (components == 1) {
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = row[x];
            } else {
                cmyk_to_rgb(&row[4 * x], &out[3 * x]);
            }
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return apply_orientation(std::move(img), orientation);
}

// ----------------------------------------------------------------------------------------- PNG

struct PngReader {
    const std::vector<uint8_t>* data;
    size_t offset;
    char message[256];
};

void png_read_memory(png_structp png, png_bytep out, png_size_t length) {
    auto* reader = static_cast<PngReader*>(png_get_io_ptr(png));
    if (reader->offset + length > reader->data->size()) png_error(png, "unexpected end of file");
    std::memcpy(out, reader->data->data() + reader->offset, length);
    reader->offset += length;
}

void png_fail(png_structp png, png_const_charp message) {
    auto* reader = static_cast<PngReader*>(png_get_io_ptr(png));
    std::snprintf(reader->message, sizeof reader->message, "%s", message);
    png_longjmp(png, 1);
}

void png_quiet(png_structp, png_const_charp) {}

RgbImage decode_png(const std::vector<uint8_t>& data, const DecodeOptions& options) {
    PngReader reader{&data, 0, {}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, png_fail, png_quiet);
    png_infop info = png_create_info_struct(png);
    png_set_read_fn(png, &reader, png_read_memory);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);  // our pixel limit applies instead
    // Like Pillow, keep going on a bad CRC in an ancillary chunk, but not in image data.
    png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_WARN_DISCARD);
    RgbImage img;
    std::vector<uint8_t> decoded;
    std::vector<png_bytep> rows;
    bool size_ok = false;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, nullptr);
        if (!size_ok) throw DecodeError(std::string("PNG header could not be read (") + reader.message + ")");
        throw DecodeError(std::string("image could not be decoded (") + reader.message + "); is the file truncated?");
    }
    png_read_info(png, info);
    const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    check_size(width, height, options);
    size_ok = true;
    const int colour = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);

    // 16-bit grey is the one mode Pillow rescales (to_rgb: round(v / 65535 * 255)); every other
    // 16-bit mode keeps the high byte, which is what png_set_strip_16 does.
    const bool grey16 = colour == PNG_COLOR_TYPE_GRAY && depth == 16;
    // Pillow composites a palette's tRNS alpha, but ignores tRNS on grey and RGB images.
    const bool palette_alpha = colour == PNG_COLOR_TYPE_PALETTE && png_get_valid(png, info, PNG_INFO_tRNS);
    if (colour == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (palette_alpha) png_set_tRNS_to_alpha(png);
    if (colour == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && !grey16) png_set_strip_16(png);
    if (grey16) png_set_swap(png);  // host (little-endian) order for the uint16 view below
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    const size_t row_bytes = png_get_rowbytes(png, info);
    const int channels = png_get_channels(png, info);
    decoded.resize(row_bytes * height);
    rows.resize(height);
    for (png_uint_32 y = 0; y < height; ++y) rows[y] = decoded.data() + y * row_bytes;
    png_read_image(png, rows.data());
    png_read_end(png, info);  // an eXIf or iTXt after the image data counts too

    int exif = 0;
    png_uint_32 exif_size = 0;
    png_bytep exif_data = nullptr;
    if (png_get_eXIf_1(png, info, &exif_size, &exif_data) && exif_data) exif = exif_orientation(exif_data, exif_size);
    std::string_view xmp;
    png_textp texts = nullptr;
    int n_texts = 0;
    png_get_text(png, info, &texts, &n_texts);
    for (int i = 0; i < n_texts; ++i) {
        if (std::strcmp(texts[i].key, "XML:com.adobe.xmp") == 0) {
            xmp = std::string_view(texts[i].text, texts[i].itxt_length ? texts[i].itxt_length : texts[i].text_length);
        }
    }
    const int orientation = choose_orientation(exif, xmp);

    img.width = static_cast<int>(width);
    img.height = static_cast<int>(height);
    img.pixels.resize(static_cast<size_t>(width) * height * 3);
    for (png_uint_32 y = 0; y < height; ++y) {
        const uint8_t* in = rows[y];
        uint8_t* out = img.pixels.data() + static_cast<size_t>(y) * width * 3;
        for (png_uint_32 x = 0; x < width; ++x, out += 3) {
            if (grey16) {
                uint16_t v;
                std::memcpy(&v, in + 2 * x, 2);
                const double scaled = v / 65535.0 * 255.0 + 0.5;
                out[0] = out[1] = out[2] = static_cast<uint8_t>(scaled > 255.0 ? 255.0 : scaled);
            } else if (channels == 1) {
                out[0] = out[1] = out[2] = in[x];
            } else if (channels == 2) {
                const uint8_t rgba[4] = {in[2 * x], in[2 * x], in[2 * x], in[2 * x + 1]};
                composite_over(rgba, options.background, out);
            } else if (channels == 3) {
                std::memcpy(out, in + 3 * x, 3);
            } else {
                composite_over(in + 4 * x, options.background, out);
            }
        }
    }
    png_destroy_read_struct(&png, &info, nullptr);
    return apply_orientation(std::move(img), orientation);
}

uint32_t read_u(const uint8_t* p, int bytes, bool big_endian) {
    uint32_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint32_t>(p[big_endian ? i : bytes - 1 - i]) << (8 * (bytes - 1 - i));
    return v;
}

}  // namespace

// ----------------------------------------------------------------------------------------- EXIF

int exif_orientation(const uint8_t* tiff, size_t size) {
    if (size < 8) return 0;
    bool big;
    if (std::memcmp(tiff, "II*\0", 4) == 0) {
        big = false;
    } else if (std::memcmp(tiff, "MM\0*", 4) == 0) {
        big = true;
    } else {
        return 0;
    }
    const uint32_t ifd = read_u(tiff + 4, 4, big);
    if (ifd + 2 > size) return 0;
    const uint32_t entries = read_u(tiff + ifd, 2, big);
    for (uint32_t i = 0; i < entries; ++i) {
        const size_t at = ifd + 2 + 12 * static_cast<size_t>(i);
        if (at + 12 > size) return 0;
        if (read_u(tiff + at, 2, big) != 0x0112) continue;
        const uint32_t type = read_u(tiff + at + 2, 2, big), count = read_u(tiff + at + 4, 4, big);
        if (count != 1) return 0;  // Pillow would see a tuple, which is no orientation
        switch (type) {
            case 1:  // BYTE
                return tiff[at + 8];
            case 3:  // SHORT
                return static_cast<int>(read_u(tiff + at + 8, 2, big));
            case 4:  // LONG
                return static_cast<int>(read_u(tiff + at + 8, 4, big));
            default:
                return 0;
        }
    }
    return 0;
}

RgbImage apply_orientation(RgbImage img, int orientation) {
    if (orientation < 2 || orientation > 8) return img;
    const int w = img.width, h = img.height;
    const bool swaps = orientation >= 5;
    RgbImage out;
    out.width = swaps ? h : w;
    out.height = swaps ? w : h;
    out.pixels.resize(img.pixels.size());
    for (int y = 0; y < out.height; ++y) {
        for (int x = 0; x < out.width; ++x) {
            int sx = x, sy = y;  // the source pixel of output (x, y), per Pillow's Transpose methods
            switch (orientation) {
                case 2: sx = w - 1 - x; break;                     // FLIP_LEFT_RIGHT
                case 3: sx = w - 1 - x, sy = h - 1 - y; break;     // ROTATE_180
                case 4: sy = h - 1 - y; break;                     // FLIP_TOP_BOTTOM
                case 5: sx = y, sy = x; break;                     // TRANSPOSE
                case 6: sx = y, sy = h - 1 - x; break;             // ROTATE_270
                case 7: sx = w - 1 - y, sy = h - 1 - x; break;     // TRANSVERSE
                case 8: sx = w - 1 - y, sy = x; break;             // ROTATE_90
            }
            std::memcpy(&out.pixels[(static_cast<size_t>(y) * out.width + x) * 3],
                        &img.pixels[(static_cast<size_t>(sy) * w + sx) * 3], 3);
        }
    }
    return out;
}

RgbImage decode_image(const std::vector<uint8_t>& data, const DecodeOptions& options) {
    if (data.empty()) throw DecodeError("empty body: send the image bytes as the request body");
    if (starts_with(data, kJpegMagic, sizeof kJpegMagic)) return decode_jpeg(data, options);
    if (starts_with(data, kPngMagic, sizeof kPngMagic)) return decode_png(data, options);
    throw DecodeError("body is not a JPEG or PNG image (the C++ program decodes only these two formats)");
}

}  // namespace classifier
