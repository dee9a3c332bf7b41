// classify: image files -> the server's JSON answer, one line per image.
//
//   classify --model-dir build/model [--crop random|center] [--seed N | --box L,T,R,B]
//            [--threads N] [--batch N] [--repeat N] [--timings] [--dump-pixels DIR]
//            [--dump-tensor DIR] [--no-network] IMAGE...
//
// The model folder is the one `make train` writes: metadata.json (preprocessing), index_to_name.json
// (labels) and model.int8.onnx (or --model FILE), run on OpenVINO's CPU plugin with the settings
// of classifier.backends.OpenVinoBackend. Exit status: 0, 1 for a bad image, 2 for bad usage.
#include <openvino/openvino.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "decode.h"
#include "pipeline.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // keys in the server's order
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
    fs::path model_dir;
    fs::path model;  // default: model_dir / model.int8.onnx
    std::string crop = "random";
    std::optional<uint64_t> seed;
    std::optional<std::array<int, 4>> box;
    int threads = 0;
    int batch = 1;
    int repeat = 1;
    int topk = 2;
    bool timings = false;
    bool network = true;
    fs::path dump_pixels, dump_tensor;
    std::vector<fs::path> images;
};

[[noreturn]] void usage(const std::string& message) {
    std::cerr << "error: " << message << "\n"
              << "usage: classify --model-dir DIR [--model FILE] [--crop random|center] [--seed N | --box L,T,R,B]\n"
              << "                [--threads N] [--batch N] [--repeat N] [--topk K] [--timings] [--no-network]\n"
              << "                [--dump-pixels DIR] [--dump-tensor DIR] IMAGE...\n";
    std::exit(2);
}

long long parse_int(const std::string& flag, const std::string& text, long long low, long long high) {
    try {
        size_t used = 0;
        const long long v = std::stoll(text, &used);
        if (used == text.size() && v >= low && v <= high) return v;
    } catch (const std::exception&) {
    }
    usage(flag + " must be an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "], got '" + text + "'");
}

Args parse_args(int argc, char** argv) {
    Args args;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(flag + " needs a value");
            return argv[++i];
        };
        if (flag == "--model-dir") {
            args.model_dir = value();
        } else if (flag == "--model") {
            args.model = value();
        } else if (flag == "--crop") {
            args.crop = value();
            if (args.crop != "random" && args.crop != "center") usage("Invalid --crop '" + args.crop + "'. Only 'random' and 'center' are supported.");
        } else if (flag == "--seed") {
            // The server's range (handlers/requests.py MAX_SEED is 2**63 - 1).
            args.seed = static_cast<uint64_t>(parse_int(flag, value(), 0, INT64_MAX));
        } else if (flag == "--box") {
            std::array<int, 4> b{};
            std::stringstream in(value());
            std::string part;
            for (int k = 0; k < 4; ++k) {
                if (!std::getline(in, part, ',')) usage("--box needs LEFT,TOP,RIGHT,BOTTOM");
                b[k] = static_cast<int>(parse_int("--box", part, 0, 1 << 20));
            }
            if (b[2] <= b[0] || b[3] <= b[1]) usage("--box needs RIGHT > LEFT and BOTTOM > TOP");
            args.box = b;
        } else if (flag == "--threads") {
            args.threads = static_cast<int>(parse_int(flag, value(), 0, 1024));
        } else if (flag == "--batch") {
            args.batch = static_cast<int>(parse_int(flag, value(), 1, 1024));
        } else if (flag == "--repeat") {
            args.repeat = static_cast<int>(parse_int(flag, value(), 1, 1000000));
        } else if (flag == "--topk") {
            args.topk = static_cast<int>(parse_int(flag, value(), 1, 1000));
        } else if (flag == "--timings") {
            args.timings = true;
        } else if (flag == "--no-network") {
            args.network = false;
        } else if (flag == "--dump-pixels") {
            args.dump_pixels = value();
        } else if (flag == "--dump-tensor") {
            args.dump_tensor = value();
        } else if (!flag.empty() && flag[0] == '-') {
            usage("unknown option " + flag);
        } else {
            args.images.emplace_back(flag);
        }
    }
    if (args.images.empty()) usage("no image given");
    if (args.model_dir.empty() && args.network) usage("--model-dir is required (or --no-network)");
    if (args.model.empty() && !args.model_dir.empty()) args.model = args.model_dir / "model.int8.onnx";
    return args;
}

std::vector<uint8_t> read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path.string());
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_file(const fs::path& path, const void* data, size_t size) {
    std::ofstream out(path, std::ios::binary);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

struct Model {
    classifier::PreprocessConfig preprocess;
    classifier::DecodeOptions decode;
    std::vector<std::string> labels;
};

Model read_model_dir(const fs::path& dir) {
    Model model;
    if (dir.empty()) return model;
    const json meta = json::parse(read_file(dir / "metadata.json"));
    const json& p = meta.at("preprocessing");
    model.preprocess.zoom = p.value("zoom", model.preprocess.zoom);
    model.preprocess.crop_size = p.value("crop_size", model.preprocess.crop_size);
    model.preprocess.input_size = p.value("input_size", model.preprocess.input_size);
    if (p.contains("mean")) model.preprocess.mean = p["mean"].get<std::array<double, 3>>();
    if (p.contains("std")) model.preprocess.std = p["std"].get<std::array<double, 3>>();
    model.decode.max_pixels = p.value("max_image_pixels", model.decode.max_pixels);
    if (p.contains("background")) {
        const auto bg = p["background"].get<std::array<int, 3>>();
        for (int c = 0; c < 3; ++c) model.decode.background[c] = static_cast<uint8_t>(bg[c]);
    }
    const json names = json::parse(read_file(dir / "index_to_name.json"));
    model.labels.resize(names.size());
    for (const auto& [key, name] : names.items()) {
        const size_t idx = std::stoul(key);
        if (idx >= model.labels.size()) model.labels.resize(idx + 1);
        model.labels[idx] = name.get<std::string>();
    }
    return model;
}

double ms_since(Clock::time_point start) { return std::chrono::duration<double, std::milli>(Clock::now() - start).count(); }

uint64_t fresh_seed() {
    // Like the handler's random.getrandbits(63): any answer can be reproduced from its reported seed.
    std::random_device device;
    return ((static_cast<uint64_t>(device()) << 32) | device()) >> 1;
}

}  // namespace

int main(int argc, char** argv) {
    const auto started = Clock::now();
    const Args args = parse_args(argc, argv);
    Model model;
    try {
        model = read_model_dir(args.model_dir);
    } catch (const std::exception& exc) {
        std::cerr << "error: cannot read the model folder " << args.model_dir << ": " << exc.what() << "\n";
        return 2;
    }
    const int threads = args.threads > 0 ? args.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const int size = model.preprocess.input_size;
    const size_t image_floats = 3 * static_cast<size_t>(size) * size;

    ov::Core core;
    ov::CompiledModel compiled;
    ov::InferRequest request;
    double load_ms = 0;
    if (args.network) {
        const auto t = Clock::now();
        // The same properties as classifier.backends.OpenVinoBackend.
        compiled = core.compile_model(core.read_model(args.model.string()), "CPU", ov::inference_num_threads(threads),
                                      ov::hint::inference_precision(ov::element::f32),
                                      ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::hint::num_requests(1),
                                      ov::num_streams(1));
        request = compiled.create_infer_request();
        load_ms = ms_since(t);
    }

    int failures = 0;
    std::vector<float> batch(image_floats * args.batch);
    for (int pass = 0; pass < args.repeat; ++pass) {
        for (size_t first = 0; first < args.images.size(); first += args.batch) {
            const size_t count = std::min<size_t>(args.batch, args.images.size() - first);
            std::vector<json> answers(count);
            std::vector<json> timing(count);
            std::vector<size_t> rows;  // answers[i] -> row in the batch
            for (size_t i = 0; i < count; ++i) {
                const fs::path& path = args.images[first + i];
                try {
                    const std::vector<uint8_t> bytes = read_file(path);
                    auto t = Clock::now();
                    const classifier::RgbImage img = classifier::decode_image(bytes, model.decode);
                    timing[i]["decode"] = ms_since(t);
                    t = Clock::now();
                    const auto [zw, zh] = classifier::zoomed_size(img.width, img.height, model.preprocess.zoom);
                    classifier::CropBox box;
                    json crop;
                    if (args.box) {
                        const auto& b = *args.box;
                        box = {b[0], b[1], b[2] - b[0], b[3] - b[1]};
                        if (b[2] > zw || b[3] > zh || box.width > model.preprocess.crop_size ||
                            box.height > model.preprocess.crop_size) {
                            throw std::invalid_argument("--box must lie inside the zoomed image (" + std::to_string(zw) + "x" +
                                                        std::to_string(zh) + ") and be at most " +
                                                        std::to_string(model.preprocess.crop_size) + " pixels a side");
                        }
                        crop = {{"mode", "box"}, {"seed", nullptr}};
                    } else {
                        const uint64_t seed = args.crop == "center" ? 0 : args.seed.value_or(fresh_seed());
                        box = classifier::choose_crop(zw, zh, model.preprocess.crop_size, args.crop, seed);
                        crop = {{"mode", args.crop}, {"seed", args.crop == "center" ? json(nullptr) : json(seed)}};
                    }
                    crop["box"] = {box.left, box.top, box.left + box.width, box.top + box.height};
                    float* tensor = batch.data() + rows.size() * image_floats;
                    classifier::zoom_crop_pad(img, box, model.preprocess, tensor);
                    timing[i]["preprocess"] = ms_since(t);
                    answers[i]["crop"] = crop;
                    const std::string stem = path.filename().string();
                    if (!args.dump_pixels.empty()) {
                        write_file(args.dump_pixels / (stem + ".rgb"), img.pixels.data(), img.pixels.size());
                        answers[i]["size"] = {img.width, img.height};
                    }
                    if (!args.dump_tensor.empty()) {
                        write_file(args.dump_tensor / (stem + ".f32"), tensor, image_floats * sizeof(float));
                    }
                    rows.push_back(i);
                } catch (const std::exception& exc) {
                    // The server's error body (classifier.postprocessing.error_body) for a bad item.
                    answers[i] = {{"code", 400}, {"type", "InvalidInput"}, {"message", exc.what()}, {"file", path.string()}};
                    ++failures;
                }
            }
            if (args.network && !rows.empty()) {
                auto t = Clock::now();
                const ov::Tensor input(ov::element::f32, {rows.size(), 3, static_cast<size_t>(size), static_cast<size_t>(size)},
                                       batch.data());
                request.set_input_tensor(input);
                request.infer();
                const double per_image = ms_since(t) / static_cast<double>(rows.size());
                const ov::Tensor logits = request.get_output_tensor(0), embedding = request.get_output_tensor(1);
                const int classes = static_cast<int>(logits.get_shape()[1]), dim = static_cast<int>(embedding.get_shape()[1]);
                for (size_t r = 0; r < rows.size(); ++r) {
                    const size_t i = rows[r];
                    timing[i]["network"] = per_image;
                    t = Clock::now();
                    json predictions = json::array();
                    for (const auto& p : classifier::top_k_predictions(logits.data<float>() + r * classes, classes,
                                                                       model.labels, args.topk)) {
                        predictions.push_back({{"label", p.label}, {"index", p.index}, {"probability", p.probability}});
                    }
                    const auto stats = classifier::embedding_stats(embedding.data<float>() + r * dim, dim);
                    answers[i]["predictions"] = predictions;
                    answers[i]["embedding"] = {{"mean", stats.mean}, {"variance", stats.variance}, {"dim", stats.dim}};
                    timing[i]["postprocess"] = ms_since(t);
                }
            }
            for (size_t i = 0; i < count; ++i) {
                if (args.timings) {
                    answers[i]["timings_ms"] = timing[i];
                    answers[i]["file"] = args.images[first + i].string();
                }
                // Key order of the server's body: predictions, embedding, crop.
                std::cout << "{";
                bool comma = false;
                for (const char* key : {"predictions", "embedding", "crop", "code", "type", "message", "size", "file", "timings_ms"}) {
                    if (!answers[i].contains(key)) continue;
                    std::cout << (comma ? ", " : "") << json(key).dump() << ": " << answers[i][key].dump();
                    comma = true;
                }
                std::cout << "}\n";
            }
        }
    }
    if (args.timings) {
        std::cout << json({{"model_load_ms", load_ms}, {"process_ms", ms_since(started)}, {"threads", threads}}).dump() << "\n";
    }
    std::cout.flush();
    return failures ? 1 : 0;
}
