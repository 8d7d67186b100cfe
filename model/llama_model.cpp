#include "model/llama_model.h"

#include <cmath>
#include <cstring>

namespace lightserve::model {

using kernels::WeightView;

struct LlamaModel::Layer {
  std::vector<float> attn_norm;
  std::vector<float> ffn_norm;
  std::unique_ptr<kernels::Weight> qkv;      // Q, K, V projections stacked: one matmul
  std::unique_ptr<kernels::Weight> output;   // attention output projection
  std::unique_ptr<kernels::Weight> gate_up;  // FFN gate and up stacked: one matmul
  std::unique_ptr<kernels::Weight> down;
};

SequenceCache::SequenceCache(const LlamaConfig& config, int32_t capacity)
    : capacity_(capacity),
      row_(static_cast<int64_t>(config.num_kv_heads) * config.head_dim),
      layer_stride_(row_ * capacity),
      keys_(static_cast<size_t>(layer_stride_) * config.num_layers),
      values_(static_cast<size_t>(layer_stride_) * config.num_layers) {}

Status SequenceCache::check_append(int32_t n) const {
  if (static_cast<int64_t>(size_) + n > capacity_) {
    return Error{"sequence of " + std::to_string(static_cast<int64_t>(size_) + n) +
                 " tokens exceeds its cache capacity of " + std::to_string(capacity_)};
  }
  return Status::Ok();
}

LayerKv SequenceCache::store_layer(kernels::Backend& backend, int32_t layer, const float* k,
                                   const float* v, int64_t src_stride, int32_t n) {
  const int64_t dst = static_cast<int64_t>(size_) * row_;
  backend.store_f16(k, src_stride, n, row_, keys(layer) + dst, row_);
  backend.store_f16(v, src_stride, n, row_, values(layer) + dst, row_);
  LayerKv out;
  out.view.kind = kernels::KvView::Kind::kContiguous;
  out.view.k = keys(layer);
  out.view.v = values(layer);
  out.view.row_stride = row_;
  return out;
}

namespace {

WeightView view_of(const GgufFile& file, const GgufTensorInfo& t) {
  // ggml order: dims[0] is the input (contiguous) axis, dims[1] the output rows.
  return WeightView{t.type, t.dims.size() > 1 ? t.dims[1] : 1, t.dims[0], file.tensor_data(t)};
}

std::vector<float> f32_vector(const GgufFile& file, const GgufTensorInfo& t) {
  std::vector<float> v(static_cast<size_t>(t.num_elements));
  kernels::dequantize_row(t.type, file.tensor_data(t), v.data(), t.num_elements);
  return v;
}

}  // namespace

LlamaModel::LlamaModel(kernels::Backend& backend) : backend_(backend) {}
LlamaModel::~LlamaModel() = default;

Result<std::unique_ptr<LlamaModel>> LlamaModel::load(const std::string& path,
                                                     kernels::Backend& backend,
                                                     const LoadOptions& options) {
  auto file = GgufFile::open(path);
  if (!file) return file.error();
  std::unique_ptr<LlamaModel> model(new LlamaModel(backend));
  model->file_ = std::move(file).value();

  auto config = LlamaConfig::from_gguf(*model->file_);
  if (!config) return Error{path + ": " + config.error().message};
  model->config_ = config.value();

  auto tensors = LlamaTensors::bind(*model->file_, model->config_);
  if (!tensors) return Error{path + ": " + tensors.error().message};
  model->tensors_ = std::move(tensors).value();

  auto tokenizer = Tokenizer::from_gguf(*model->file_);
  if (!tokenizer) return Error{path + ": " + tokenizer.error().message};
  model->tokenizer_ = std::move(tokenizer).value();
  if (model->tokenizer_->vocab_size() != model->config_.vocab_size) {
    return Error{path + ": tokenizer has " + std::to_string(model->tokenizer_->vocab_size()) +
                 " tokens but the model's vocabulary is " +
                 std::to_string(model->config_.vocab_size)};
  }

  auto chat = ChatTemplate::from_gguf(*model->file_);
  if (chat) {
    model->chat_ = std::move(chat).value();
  } else {
    model->chat_error_ = chat.error().message;
  }

  if (Status s = model->prepare(options); !s) return Error{path + ": " + s.message()};
  return model;
}

Status LlamaModel::prepare(const LoadOptions& options) {
  const GgufFile& f = *file_;
  round_probabilities_f16_ = options.llama_cpp_attention;
  int64_t total = 0;
  for (const auto& t : f.tensors()) total += t.num_bytes;
  int64_t done = 0;
  auto advance = [&](const GgufTensorInfo* t) {
    if (t == nullptr) return;
    done += t->num_bytes;
    if (options.progress) options.progress(static_cast<uint64_t>(done), static_cast<uint64_t>(total));
  };
  weight_file_bytes_ = total;

  std::string weight_error;  // the first weight the backend refused
  // Stacked weights need equal types; a file could mix types across Q/K/V.
  auto stacked = [&](std::initializer_list<const GgufTensorInfo*> parts)
      -> std::vector<std::unique_ptr<kernels::Weight>> {
    std::vector<std::unique_ptr<kernels::Weight>> out;
    bool same = true;
    for (auto* p : parts) same = same && p->type == (*parts.begin())->type;
    if (same) {
      std::vector<WeightView> views;
      for (auto* p : parts) views.push_back(view_of(f, *p));
      out.push_back(backend_.make_weight(views));
    } else {
      for (auto* p : parts) {
        WeightView v = view_of(f, *p);
        out.push_back(backend_.make_weight({&v, 1}));
      }
    }
    for (auto* p : parts) advance(p);
    for (const auto& w : out) {
      if (w == nullptr && weight_error.empty()) {
        weight_error = "the backend cannot hold tensor " + (*parts.begin())->name + " (type " +
                       std::string(kernels::traits((*parts.begin())->type).name) + ")";
      }
    }
    // A weight the backend copied into its own layout no longer needs the file's pages.
    bool copied = true;
    for (const auto& w : out) copied = copied && w != nullptr && w->resident_bytes() > 0;
    if (copied) {
      for (auto* p : parts) f.release_pages(*p);
    }
    return out;
  };

  layers_.resize(tensors_.layers.size());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const LayerTensors& t = tensors_.layers[i];
    Layer& layer = layers_[i];
    layer.attn_norm = f32_vector(f, *t.attn_norm);
    layer.ffn_norm = f32_vector(f, *t.ffn_norm);
    auto qkv = stacked({t.attn_q, t.attn_k, t.attn_v});
    auto gate_up = stacked({t.ffn_gate, t.ffn_up});
    if (qkv.size() != 1 || gate_up.size() != 1) {
      return Error{"layer " + std::to_string(i) +
                   ": Q/K/V (or gate/up) weights of different types are not supported"};
    }
    layer.qkv = std::move(qkv[0]);
    layer.gate_up = std::move(gate_up[0]);
    layer.output = std::move(stacked({t.attn_output})[0]);
    layer.down = std::move(stacked({t.ffn_down})[0]);
    advance(t.attn_norm);
    advance(t.ffn_norm);
  }
  token_embd_ = std::move(stacked({tensors_.token_embd})[0]);
  if (!config_.tied_embeddings) output_ = std::move(stacked({tensors_.output})[0]);
  output_norm_ = f32_vector(f, *tensors_.output_norm);
  advance(tensors_.output_norm);
  if (!weight_error.empty()) return Error{weight_error};
  return Status::Ok();
}

int64_t LlamaModel::weight_resident_bytes() const {
  int64_t bytes = token_embd_->resident_bytes() + (output_ ? output_->resident_bytes() : 0);
  for (const auto& l : layers_) {
    bytes += l.qkv->resident_bytes() + l.output->resident_bytes() + l.gate_up->resident_bytes() +
             l.down->resident_bytes();
    bytes += static_cast<int64_t>((l.attn_norm.size() + l.ffn_norm.size()) * sizeof(float));
  }
  return bytes;
}

Status LlamaModel::forward(std::span<const BatchEntry> batch, std::vector<float>& logits) {
  const LlamaConfig& c = config_;
  const int64_t d = c.hidden_dim;
  const int64_t hd = c.head_dim;
  const int64_t q_dim = static_cast<int64_t>(c.num_heads) * hd;
  const int64_t kv_dim = static_cast<int64_t>(c.num_kv_heads) * hd;
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const int64_t ff = c.ffn_dim;

  // Validate everything before touching any cache.
  int64_t num_tokens = 0;
  for (const BatchEntry& e : batch) {
    if (e.cache == nullptr || e.tokens.empty()) return Error{"empty batch entry"};
    if (Status s = e.cache->check_append(static_cast<int32_t>(e.tokens.size())); !s) return s;
    for (int32_t id : e.tokens) {
      if (id < 0 || id >= c.vocab_size) {
        return Error{"token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                     std::to_string(c.vocab_size - 1) + ")"};
      }
    }
    num_tokens += static_cast<int64_t>(e.tokens.size());
  }
  if (num_tokens == 0) return Error{"empty batch"};

  Scratch& s = scratch_;
  s.tokens.clear();
  s.positions.clear();
  s.out_rows.clear();
  std::vector<kernels::AttentionSeq> seqs;
  seqs.reserve(batch.size());
  for (const BatchEntry& e : batch) {
    const int64_t first_row = static_cast<int64_t>(s.tokens.size());
    const int32_t n = static_cast<int32_t>(e.tokens.size());
    for (int32_t i = 0; i < n; ++i) {
      s.tokens.push_back(e.tokens[i]);
      s.positions.push_back(e.cache->size() + i);
      if (e.all_logits || i == n - 1) s.out_rows.push_back(first_row + i);
    }
    kernels::AttentionSeq seq;
    seq.first_row = first_row;
    seq.num_queries = n;
    seq.first_pos = e.cache->size();
    seqs.push_back(seq);
  }
  const int64_t num_out = static_cast<int64_t>(s.out_rows.size());

  auto grow = [](std::vector<float>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  };
  grow(s.x, num_tokens * d);
  grow(s.h, num_tokens * d);
  grow(s.qkv, num_tokens * qkv_dim);
  grow(s.attn, num_tokens * q_dim);
  grow(s.tmp, num_tokens * d);
  grow(s.gate_up, num_tokens * 2 * ff);
  grow(s.ffn, num_tokens * ff);

  kernels::Backend& b = backend_;
  b.embed(*token_embd_, s.tokens, s.x.data());
  kernels::AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim, qkv_dim, q_dim,
                                1.0f / std::sqrt(static_cast<float>(hd))};
  shape.round_probabilities_f16 = round_probabilities_f16_;

  int64_t rows = num_tokens;  // rows of x still carried (all but in the last layer)
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& L = layers_[li];
    const int32_t layer = static_cast<int32_t>(li);
    b.rms_norm(s.x.data(), L.attn_norm.data(), num_tokens, d, c.rms_norm_eps, s.h.data());
    b.matmul(*L.qkv, s.h.data(), num_tokens, s.qkv.data());
    b.rope(s.qkv.data(), s.positions, c.num_heads, hd, qkv_dim, c.rope_freq_base);
    b.rope(s.qkv.data() + q_dim, s.positions, c.num_kv_heads, hd, qkv_dim, c.rope_freq_base);
    for (size_t si = 0; si < batch.size(); ++si) {
      const float* rows = s.qkv.data() + seqs[si].first_row * qkv_dim;
      const LayerKv kv = batch[si].cache->store_layer(b, layer, rows + q_dim, rows + q_dim + kv_dim,
                                                      qkv_dim, seqs[si].num_queries);
      seqs[si].kv = kv.view;
      seqs[si].lse = kv.lse;
    }
    b.attention(s.qkv.data(), seqs, shape, s.attn.data());
    for (size_t si = 0; si < batch.size(); ++si) {
      batch[si].cache->finish_layer(b, layer, s.qkv.data() + seqs[si].first_row * qkv_dim, shape,
                                    seqs[si].num_queries);
    }

    if (li + 1 == layers_.size() && num_out < num_tokens) {
      // Last layer: only the rows whose logits are wanted matter from here on (as llama.cpp).
      for (int64_t r = 0; r < num_out; ++r) {
        const int64_t src = s.out_rows[r];
        std::memmove(s.attn.data() + r * q_dim, s.attn.data() + src * q_dim, q_dim * sizeof(float));
        std::memmove(s.x.data() + r * d, s.x.data() + src * d, d * sizeof(float));
      }
      rows = num_out;
    }
    b.matmul(*L.output, s.attn.data(), rows, s.tmp.data());
    b.add(s.x.data(), s.tmp.data(), rows * d);
    b.rms_norm(s.x.data(), L.ffn_norm.data(), rows, d, c.rms_norm_eps, s.h.data());
    b.matmul(*L.gate_up, s.h.data(), rows, s.gate_up.data());
    b.swiglu(s.gate_up.data(), rows, ff, s.ffn.data());
    b.matmul(*L.down, s.ffn.data(), rows, s.tmp.data());
    b.add(s.x.data(), s.tmp.data(), rows * d);
  }
  for (const BatchEntry& e : batch) e.cache->advance(static_cast<int32_t>(e.tokens.size()));

  b.rms_norm(s.x.data(), output_norm_.data(), num_out, d, c.rms_norm_eps, s.h.data());
  logits.resize(static_cast<size_t>(num_out * c.vocab_size));
  b.matmul(output_ ? *output_ : *token_embd_, s.h.data(), num_out, logits.data());
  return Status::Ok();
}

}  // namespace lightserve::model
