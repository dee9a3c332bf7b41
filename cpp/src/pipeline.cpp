#include "pipeline.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace classifier {

// ------------------------------------------------------------------------------ CPython's random

namespace {
constexpr int kN = 624, kM = 397;
}

PyRandom::PyRandom(uint64_t seed) {
    // random.seed(int): the absolute value as little-endian 32-bit words, at least one.
    std::vector<uint32_t> key = {static_cast<uint32_t>(seed)};
    if (seed >> 32) key.push_back(static_cast<uint32_t>(seed >> 32));
    state_[0] = 19650218u;
    for (int i = 1; i < kN; ++i) state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + i;
    int i = 1;
    size_t j = 0;
    for (size_t k = std::max<size_t>(kN, key.size()); k; --k) {
        state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1664525u)) + key[j] + static_cast<uint32_t>(j);
        ++i, ++j;
        if (i >= kN) state_[0] = state_[kN - 1], i = 1;
        if (j >= key.size()) j = 0;
    }
    for (int k = kN - 1; k; --k) {
        state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1566083941u)) - static_cast<uint32_t>(i);
        ++i;
        if (i >= kN) state_[0] = state_[kN - 1], i = 1;
    }
    state_[0] = 0x80000000u;
    index_ = kN;
}

uint32_t PyRandom::next_u32() {
    if (index_ >= kN) {
        for (int k = 0; k < kN; ++k) {
            const uint32_t y = (state_[k] & 0x80000000u) | (state_[(k + 1) % kN] & 0x7fffffffu);
            state_[k] = state_[(k + kM) % kN] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        index_ = 0;
    }
    uint32_t y = state_[index_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

int64_t PyRandom::randint(int64_t low, int64_t high) {
    const uint64_t n = static_cast<uint64_t>(high - low + 1);
    int bits = 0;
    while ((n >> bits) != 0 && bits < 64) ++bits;  // n.bit_length()
    if (bits > 32) throw std::invalid_argument("randint range over 2**32 is not supported");
    uint64_t r;
    do {
        r = next_u32() >> (32 - bits);  // getrandbits(bits) for bits <= 32
    } while (r >= n);
    return low + static_cast<int64_t>(r);
}

// ------------------------------------------------------------------------------ geometry

std::pair<int, int> zoomed_size(int width, int height, double zoom) {
    return {std::max(1, static_cast<int>(width * zoom + 0.5)), std::max(1, static_cast<int>(height * zoom + 0.5))};
}

CropBox choose_crop(int zoomed_w, int zoomed_h, int crop_size, const std::string& mode, uint64_t seed) {
    CropBox box;
    box.width = std::min(crop_size, zoomed_w);
    box.height = std::min(crop_size, zoomed_h);
    if (mode == "center") {
        box.left = (zoomed_w - box.width) / 2;
        box.top = (zoomed_h - box.height) / 2;
    } else if (mode == "random") {
        PyRandom rng(seed);
        box.left = static_cast<int>(rng.randint(0, zoomed_w - box.width));
        box.top = static_cast<int>(rng.randint(0, zoomed_h - box.height));
    } else {
        throw std::invalid_argument("Invalid crop mode '" + mode + "'. Only 'random' and 'center' are supported.");
    }
    return box;
}

namespace {

struct Taps {
    std::vector<int> lo, hi;
    std::vector<float> weight;
};

// Pixel-centre bilinear taps (align_corners=False) for output pixels start .. start+length-1,
// in float64 as in classifier.preprocessing._source_taps, the weight rounded to float32 last.
Taps source_taps(int start, int length, int in_size, int out_size) {
    Taps taps;
    const double scale = static_cast<double>(in_size) / out_size;
    for (int d = start; d < start + length; ++d) {
        const double src = std::max((d + 0.5) * scale - 0.5, 0.0);
        const int lo = std::min(static_cast<int>(std::floor(src)), in_size - 1);
        taps.lo.push_back(lo);
        taps.hi.push_back(std::min(lo + 1, in_size - 1));
        taps.weight.push_back(static_cast<float>(std::clamp(src - lo, 0.0, 1.0)));
    }
    return taps;
}

}  // namespace

void zoom_crop_pad(const RgbImage& img, const CropBox& box, const PreprocessConfig& config, float* out) {
    const auto [zw, zh] = zoomed_size(img.width, img.height, config.zoom);
    const Taps ty = source_taps(box.top, box.height, img.height, zh);
    const Taps tx = source_taps(box.left, box.width, img.width, zw);
    const int size = config.input_size;
    if (box.width > size || box.height > size) throw std::invalid_argument("crop does not fit in the input size");
    std::fill(out, out + 3 * size * size, 0.0f);
    const int top = (size - box.height) / 2, left = (size - box.width) / 2;
    // Each step is its own float32 rounding, as in the torch code (build flag -ffp-contract=off
    // keeps the compiler from fusing them into FMAs).
    std::vector<float> row(static_cast<size_t>(img.width));
    for (int c = 0; c < 3; ++c) {
        const float mean = static_cast<float>(config.mean[c]), stdev = static_cast<float>(config.std[c]);
        for (int y = 0; y < box.height; ++y) {
            const float wy = ty.weight[y], wy0 = 1.0f - wy;
            const uint8_t* r0 = img.pixels.data() + static_cast<size_t>(ty.lo[y]) * img.width * 3 + c;
            const uint8_t* r1 = img.pixels.data() + static_cast<size_t>(ty.hi[y]) * img.width * 3 + c;
            for (int x = 0; x < box.width; ++x) {
                for (const int sx : {tx.lo[x], tx.hi[x]}) {
                    const float a = static_cast<float>(r0[3 * sx]) / 255.0f, b = static_cast<float>(r1[3 * sx]) / 255.0f;
                    const float p = a * wy0, q = b * wy;
                    row[sx] = p + q;
                }
            }
            float* dst = out + (static_cast<size_t>(c) * size + top + y) * size + left;
            for (int x = 0; x < box.width; ++x) {
                const float wx = tx.weight[x], wx0 = 1.0f - wx;
                const float p = row[tx.lo[x]] * wx0, q = row[tx.hi[x]] * wx;
                const float v = p + q;
                dst[x] = (v - mean) / stdev;
            }
        }
    }
}

// ------------------------------------------------------------------------------ postprocessing

std::vector<Prediction> top_k_predictions(const float* logits, int classes, const std::vector<std::string>& labels, int k) {
    const float top = *std::max_element(logits, logits + classes);
    std::vector<float> probs(classes);
    float sum = 0.0f;
    for (int i = 0; i < classes; ++i) sum += probs[i] = std::exp(logits[i] - top);
    for (float& p : probs) p /= sum;
    std::vector<int> order(classes);
    std::iota(order.begin(), order.end(), 0);
    k = std::min(k, classes);
    // torch.topk's CPU order, ties included (exact ties do happen between small probabilities): for k*64 > n it
    // runs nth_element on (value, index) in index order, then sorts the first k-1 (aten TopKImpl.h).
    const auto larger = [&](int a, int b) { return probs[a] > probs[b]; };
    if (static_cast<int64_t>(k) * 64 <= classes) {
        std::partial_sort(order.begin(), order.begin() + k, order.end(), larger);
    } else {
        std::nth_element(order.begin(), order.begin() + k - 1, order.end(), larger);
        std::sort(order.begin(), order.begin() + k - 1, larger);
    }
    std::vector<Prediction> out;
    for (int i = 0; i < k; ++i) {
        const int idx = order[i];
        out.push_back({idx < static_cast<int>(labels.size()) ? labels[idx] : std::to_string(idx), idx, probs[idx]});
    }
    return out;
}

EmbeddingStats embedding_stats(const float* embedding, int dim) {
    double sum = 0;
    for (int i = 0; i < dim; ++i) sum += embedding[i];
    const double mean = sum / dim;
    double squares = 0;
    for (int i = 0; i < dim; ++i) squares += (embedding[i] - mean) * (embedding[i] - mean);
    return {mean, squares / dim, dim};
}

}  // namespace classifier
