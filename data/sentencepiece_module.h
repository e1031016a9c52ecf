// The C interface of the SentencePiece module (data/sentencepiece_module.cpp, built as
// libladder_sentencepiece.so).
//
// Why a module: Debian's libsentencepiece carries its own copy of protobuf 3.14 and exports its
// symbols, while LibTorch links the system protobuf 3.21. Linked into one process the two collide
// at start-up (a crash in protobuf's static initialisers). data/tokenizer.cpp therefore loads this
// module with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): SentencePiece then binds to its own protobuf and
// LibTorch to the system's. Only plain C types cross the boundary.
#pragma once

#include <stddef.h>

extern "C" {

struct ladder_sp_model;

// Each call returns 0 on success; on failure it returns non-zero and *error points to a message
// that stays valid until the next call on the same thread.
typedef int (*ladder_sp_next_sentence_fn)(void* context, const char** text, size_t* length);

int ladder_sp_load(const char* model_bytes, size_t length, ladder_sp_model** model,
                   const char** error);
void ladder_sp_free(ladder_sp_model* model);
int ladder_sp_vocab_size(const ladder_sp_model* model);
int ladder_sp_eos_id(const ladder_sp_model* model);
// *ids stays valid until the next encode on the same thread.
int ladder_sp_encode(const ladder_sp_model* model, const char* text, size_t length, const int** ids,
                     size_t* count, const char** error);
// *text stays valid until the next decode on the same thread.
int ladder_sp_decode(const ladder_sp_model* model, const int* ids, size_t count, const char** text,
                     size_t* length, const char** error);
// Trains a model from sentences pulled through `next` (it returns 0 at the end); options are
// SentencePiece trainer flags as key/value pairs. *model_bytes stays valid until the next train
// call.
int ladder_sp_train(const char* const* keys, const char* const* values, size_t option_count,
                    ladder_sp_next_sentence_fn next, void* context, const char** model_bytes,
                    size_t* model_length, const char** error);
}
