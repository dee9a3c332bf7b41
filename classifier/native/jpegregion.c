/* Region decoding of a JPEG through libjpeg(-turbo)'s own API: decode only the rows and columns a window needs.
 *
 * Loaded with ctypes by classifier/jpeg_region.py; built by `make native` (cc -shared ..., with libjpeg's headers
 * but not linked to a libjpeg). It has no Python dependency, so one build serves every interpreter, and errors come
 * back as a return code and a message instead of libjpeg's default exit(): error_exit longjmps back here.
 *
 * jr_init() binds the libjpeg functions by dlopen/dlsym from a path the caller chooses (RTLD_LOCAL: nothing else in
 * the process sees them). jpeg_region.py passes the libjpeg-turbo inside Pillow's wheel first, so the region decode
 * runs the very decoder Pillow's full decode runs, on any distribution, and Debian's libjpeg.so.62 after it.
 *
 * Identity with a full decode: libjpeg-turbo treats the edges of a cropped/skipped area as image edges when it
 * upsamples chroma, so the decoded area carries a margin of one iMCU on every side of the window (clamped to the
 * image) and only the window is copied out. Rows below the window are never entropy-decoded: the decode stops.
 */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

enum { JR_OK = 0, JR_ERROR = 1, JR_UNSUPPORTED = 2 };

/* The libjpeg functions this file calls, bound by jr_init(). The macros below send every call through them. */
#define JR_FUNCTIONS(X)                                                                                            \
  X(jpeg_std_error) X(jpeg_CreateDecompress) X(jpeg_mem_src) X(jpeg_read_header) X(jpeg_start_decompress)        \
  X(jpeg_crop_scanline) X(jpeg_skip_scanlines) X(jpeg_read_scanlines) X(jpeg_abort_decompress)                  \
  X(jpeg_destroy_decompress)
#define JR_FIELD(name) __typeof__(&name) name;
static struct { JR_FUNCTIONS(JR_FIELD) } jr_lib;
static int jr_bound = 0;

/* Bind the functions from the libjpeg at `path` (a libjpeg-turbo with the ABI of the jpeglib.h this was compiled
 * with). Returns JR_OK, or JR_ERROR with msg naming what failed. Call it once, before any jr_decode_region. */
int jr_init(const char *path, char *msg, int msg_len) {
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    if (msg && msg_len > 0) snprintf(msg, (size_t)msg_len, "%s", dlerror());
    return JR_ERROR;
  }
  /* Bound into a copy first, so a library missing a function leaves the table of an earlier jr_init intact. */
  struct { JR_FUNCTIONS(JR_FIELD) } bound;
#define JR_BIND(name)                                                                                              \
  *(void **)&bound.name = dlsym(handle, #name);                                                                   \
  if (!bound.name) {                                                                                               \
    if (msg && msg_len > 0) snprintf(msg, (size_t)msg_len, "%s has no %s (libjpeg-turbo >= 1.5 needed)", path, #name); \
    dlclose(handle);                                                                                               \
    return JR_ERROR;                                                                                               \
  }
  JR_FUNCTIONS(JR_BIND)
  memcpy(&jr_lib, &bound, sizeof(jr_lib));
  jr_bound = 1;
  return JR_OK;
}

#define jpeg_std_error (*jr_lib.jpeg_std_error)
#define jpeg_CreateDecompress (*jr_lib.jpeg_CreateDecompress)
#define jpeg_mem_src (*jr_lib.jpeg_mem_src)
#define jpeg_read_header (*jr_lib.jpeg_read_header)
#define jpeg_start_decompress (*jr_lib.jpeg_start_decompress)
#define jpeg_crop_scanline (*jr_lib.jpeg_crop_scanline)
#define jpeg_skip_scanlines (*jr_lib.jpeg_skip_scanlines)
#define jpeg_read_scanlines (*jr_lib.jpeg_read_scanlines)
#define jpeg_abort_decompress (*jr_lib.jpeg_abort_decompress)
#define jpeg_destroy_decompress (*jr_lib.jpeg_destroy_decompress)

struct jr_error {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char *msg;
  int msg_len;
};

static void jr_error_exit(j_common_ptr cinfo) {
  struct jr_error *err = (struct jr_error *)cinfo->err;
  char text[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, text);
  if (err->msg && err->msg_len > 0) snprintf(err->msg, (size_t)err->msg_len, "%s", text);
  longjmp(err->jump, 1);
}

/* Pillow ignores libjpeg's warnings (corrupt-data recoveries), so a full decode and this one agree. */
static void jr_emit_message(j_common_ptr cinfo, int level) {
  (void)cinfo;
  (void)level;
}

int jr_lib_version(void) { return JPEG_LIB_VERSION; }

/* Decode stored (pre-EXIF-orientation) pixels [x, x+w) x [y, y+h) as RGB into out (h rows of w*3 bytes).
 * Returns JR_UNSUPPORTED for colour spaces Pillow converts differently (CMYK, YCCK), JR_ERROR with msg set
 * for anything libjpeg refuses. */
int jr_decode_region(const unsigned char *data, unsigned long size, int x, int y, int w, int h, unsigned char *out,
                     char *msg, int msg_len) {
  struct jpeg_decompress_struct cinfo;
  struct jr_error err;
  unsigned char *volatile row = NULL; /* volatile: freed after a longjmp */
  volatile int status = JR_OK;

  if (!jr_bound) {
    if (msg && msg_len > 0) snprintf(msg, (size_t)msg_len, "jr_init was not called");
    return JR_ERROR;
  }
  memset(&cinfo, 0, sizeof(cinfo));
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jr_error_exit;
  err.pub.emit_message = jr_emit_message;
  err.msg = msg;
  err.msg_len = msg_len;
  if (msg && msg_len > 0) msg[0] = '\0';
  if (setjmp(err.jump)) {
    free(row);
    jpeg_destroy_decompress(&cinfo);
    return JR_ERROR;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, size);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_RGB &&
      cinfo.jpeg_color_space != JCS_GRAYSCALE) {
    status = JR_UNSUPPORTED;
    goto done;
  }
  if (x < 0 || y < 0 || w < 1 || h < 1 || (JDIMENSION)(x + w) > cinfo.image_width ||
      (JDIMENSION)(y + h) > cinfo.image_height) {
    if (msg && msg_len > 0)
      snprintf(msg, (size_t)msg_len, "window %dx%d at (%d, %d) is outside the %ux%u image", w, h, x, y,
               cinfo.image_width, cinfo.image_height);
    status = JR_ERROR;
    goto done;
  }
  /* The settings of Pillow's decoder: RGB out, accurate integer IDCT, fancy upsampling (the libjpeg defaults). */
  cinfo.out_color_space = JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&cinfo);

  {
    int imcu_w = cinfo.max_h_samp_factor * DCTSIZE, imcu_h = cinfo.max_v_samp_factor * DCTSIZE;
    int width = (int)cinfo.output_width;
    int x0 = x - imcu_w < 0 ? 0 : x - imcu_w;
    int x1 = x + w + imcu_w > width ? width : x + w + imcu_w;
    int y0 = y - imcu_h < 0 ? 0 : y - imcu_h;
    JDIMENSION crop_x = (JDIMENSION)x0, crop_w = (JDIMENSION)(x1 - x0);
    int r;
    if (crop_x != 0 || crop_w != (JDIMENSION)width) jpeg_crop_scanline(&cinfo, &crop_x, &crop_w); /* widens to iMCUs */
    row = (unsigned char *)malloc((size_t)cinfo.output_width * (size_t)cinfo.output_components);
    if (!row) {
      if (msg && msg_len > 0) snprintf(msg, (size_t)msg_len, "out of memory");
      status = JR_ERROR;
      goto done;
    }
    if (y0 > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)y0);
    for (r = y0; r < y + h; r++) {
      JSAMPROW rowp = row;
      if (jpeg_read_scanlines(&cinfo, &rowp, 1) != 1) {
        if (msg && msg_len > 0) snprintf(msg, (size_t)msg_len, "decoder returned no row %d", r);
        status = JR_ERROR;
        goto done;
      }
      if (r >= y) memcpy(out + (size_t)(r - y) * (size_t)w * 3, row + (size_t)(x - (int)crop_x) * 3, (size_t)w * 3);
    }
  }

done:
  free(row);
  jpeg_abort_decompress(&cinfo); /* stop here: the rows below the window are never read */
  jpeg_destroy_decompress(&cinfo);
  return status;
}
