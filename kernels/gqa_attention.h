// Causal self-attention with grouped-query heads (GQA) and a document mask, scale
// 1/sqrt(head size): a query attends the keys at or before it in its own document only.
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

// The sizes of one attention call. NKV divides NH (the kernels abort otherwise); query head h reads
// key/value head h / (NH / NKV), so consecutive query heads share one (read in place, never
// copied).
struct GqaShape {
  int B = 0, T = 0;
  int NH = 0;   // query heads
  int NKV = 0;  // key/value heads
  int hs = 0;   // head size
  // Values per token in qkv: NH query heads, then NKV key heads, then NKV value heads.
  int64_t QkvWidth() const { return int64_t{NH + 2 * NKV} * hs; }
};

// qkv (B,T,QkvWidth); doc (B,T) the document id of each token, or nullptr for one document per
// row (plain causal): query t attends key t2 <= t where doc[t2] == doc[t]. out (B,T,NH*hs);
// att (B,NH,T,T) keeps the softmax weights for backward (0 wherever masked).
void GqaAttentionForward(float* out, float* att, const float* qkv, const int32_t* doc,
                         const GqaShape& s);

// Accumulates (+=) into dqkv (B,T,QkvWidth). The mask comes from att's zeros. Each key/value
// head's gradient sums over its query heads and rows in one fixed order (one task per batch
// row and key/value head), so the bits do not depend on the thread count.
void GqaAttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* att,
                          const GqaShape& s);

// Document ids and position ids of packed rows tokens (B,T), as Megatron-LM's
// reset_attention_mask / reset_position_ids: the end-of-document token `eod` is the last token
// of its document; the next token starts a new document at position 0. The first document of
// each row has id 0.
void DocumentIdsAndPositions(int32_t* doc, int32_t* pos, const int32_t* tokens, int B, int T,
                             int32_t eod);

}  // namespace belay::kernels::cpu
