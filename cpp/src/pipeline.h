// Everything between the decoded image and the response, mirroring classifier.preprocessing
// (crop choice, zoom, normalise, pad) and classifier.postprocessing (softmax top-k, embedding stats).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "decode.h"

namespace classifier {

struct PreprocessConfig {
    double zoom = 1.5;
    int crop_size = 100;
    int input_size = 224;
    std::array<double, 3> mean = {0.485, 0.456, 0.406};
    std::array<double, 3> std = {0.229, 0.224, 0.225};
};

// [left, top) and size in the zoomed image, like classifier.preprocessing.CropBox.
struct CropBox {
    int left = 0, top = 0, width = 0, height = 0;
};

// CPython's random.Random seeded with an int: MT19937 with init_by_array over the seed's 32-bit
// words, and randint() by rejection sampling on getrandbits(bit_length). Reproducing it is what
// lets `--seed N` pick the same crop as the server.
class PyRandom {
   public:
    explicit PyRandom(uint64_t seed);
    uint32_t next_u32();
    int64_t randint(int64_t low, int64_t high);  // inclusive, like random.randint

   private:
    std::array<uint32_t, 624> state_{};
    int index_ = 624;
};

std::pair<int, int> zoomed_size(int width, int height, double zoom);

// mode "center" ignores the seed; mode "random" draws left then top from PyRandom(seed).
CropBox choose_crop(int zoomed_w, int zoomed_h, int crop_size, const std::string& mode, uint64_t seed);

// The network input for one image, written into `out` (3 * input_size * input_size floats, CHW).
// Same float32 operations in the same order as zoom_crop + normalize_and_pad.
void zoom_crop_pad(const RgbImage& img, const CropBox& box, const PreprocessConfig& config, float* out);

struct Prediction {
    std::string label;
    int index = 0;
    double probability = 0;
};

std::vector<Prediction> top_k_predictions(const float* logits, int classes, const std::vector<std::string>& labels, int k);

struct EmbeddingStats {
    double mean = 0, variance = 0;
    int dim = 0;
};

// Population variance (divide by dim), in float64 like classifier.postprocessing.embedding_stats.
EmbeddingStats embedding_stats(const float* embedding, int dim);

}  // namespace classifier
