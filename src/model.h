/* model.h - internal view of a loaded model: hyperparameters read from GGUF metadata
 * through a per-architecture description, and the weight tensors of each block (which
 * point into the mapped file). The forward pass in context.c reads these. */
#ifndef ORC_MODEL_H
#define ORC_MODEL_H

#include "common.h"
#include "gguf.h"
#include "tokenizer.h"

enum orc_rope_type {
    ORC_ROPE_NORM = 0, /* rotate adjacent pairs (2i, 2i+1): Llama as GGUF stores it */
    ORC_ROPE_NEOX = 2  /* rotate (i, i + n_rot/2): Qwen, Gemma */
};

enum orc_ffn_act { ORC_ACT_SILU = 0, ORC_ACT_GELU_TANH = 1 };

/* One family's recipe: which optional parts its blocks have. */
typedef struct orc_arch {
    const char *name;             /* general.architecture */
    enum orc_rope_type rope;
    enum orc_ffn_act act;
    bool qkv_bias;                /* qwen2 */
    bool qk_norm;                 /* qwen3, gemma3: per-head RMSNorm of Q and K */
    bool post_norms;              /* gemma2/3: norm after attention and after FFN */
    bool embd_scale;              /* gemma: embeddings * sqrt(n_embd) */
    bool moe;                     /* qwen3moe */
    bool swa_alternate;           /* gemma2: even layers sliding, odd global */
    int swa_period;               /* gemma3: every Nth layer (N = period) is global */
} orc_arch;

typedef struct orc_layer {
    const gguf_tensor *attn_norm;         /* (n_embd) */
    const gguf_tensor *wq, *wk, *wv, *wo; /* (n_embd, n_head*hd) ... (n_head*hd, n_embd) */
    const gguf_tensor *bq, *bk, *bv;      /* optional biases */
    const gguf_tensor *q_norm, *k_norm;   /* (head_dim) optional */
    const gguf_tensor *attn_post_norm;    /* optional (n_embd) */
    const gguf_tensor *ffn_norm;          /* (n_embd) */
    const gguf_tensor *ffn_gate, *ffn_up, *ffn_down;
    const gguf_tensor *ffn_post_norm;     /* optional */
    const gguf_tensor *ffn_gate_inp;      /* MoE router (n_embd, n_expert) */
    const gguf_tensor *ffn_gate_exps, *ffn_up_exps, *ffn_down_exps; /* (.., .., n_expert) */
    bool sliding;                         /* uses the sliding window */
    int32_t kv_source;                    /* -1: own K/V; else the earlier layer whose cache it reads */
    float rope_base;
} orc_layer;

typedef struct orc_hparams {
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, n_ff;
    int32_t head_dim_k, head_dim_v, n_rot;
    float rms_eps;
    float rope_base, rope_base_local, rope_freq_scale;
    int32_t sliding_window;             /* 0 = none */
    float attn_softcap, final_softcap;  /* 0 = none */
    float attn_scale;                   /* multiplier on QK^T */
    int32_t n_expert, n_expert_used;
    bool expert_norm_weights;
    const float *rope_freqs;            /* optional Llama 3 per-dimension factors (n_rot/2) */
} orc_hparams;

struct grammar_vocab;

struct orc_model {
    gguf_ctx *gguf;
    struct grammar_vocab *gvocab; /* token trie for guided generation, built on first use */
    orc_vocab *vocab;
    const orc_arch *arch;
    char arch_name[64];
    char name[256];
    orc_hparams hp;
    const gguf_tensor *tok_embd, *output_norm, *output;
    orc_layer *layers;
    gguf_tensor *wcopy;   /* weights repacked at load: copies of their entries with the */
    int64_t n_wcopy;      /* repacked type id (ORC_QUANT_REPACKED) and writable data */
    void *wregion;        /* anonymous (huge-page) memory holding the repacked weights of a */
    size_t wregion_size;  /* mapped file, or NULL when they were rewritten in place */
    int32_t n_threads;
    uint64_t n_params;
    bool vocab_only;      /* no weights were loaded: contexts cannot be made */
};

#endif
