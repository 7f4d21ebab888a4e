/* Linear-model scores over TF-IDF n-grams of text, for sqlml (loaded with ctypes by
 * sqlml/runtimes/text.py).
 *
 * Why our own: onnxruntime runs a scikit-learn text pipeline as five string kernels
 * (StringNormalizer, Tokenizer, TfIdfVectorizer, Normalizer, LinearClassifier) that copy every
 * string and token into std::string and write a dense [rows, vocabulary] matrix; and sqlml
 * would first turn DuckDB's Arrow strings into Python objects to call them. Here one pass
 * over the Arrow buffers tokenizes, looks the n-grams up in hash tables, and sums the few
 * weights a row touches.
 *
 * Scope: ASCII text. A row with a byte >= 0x80 is flagged and left to onnxruntime, so Unicode
 * case mapping and regular-expression classes never have to agree with the C library's.
 * Semantics follow onnxruntime's kernels: the case map, then tokens = maximal runs of bytes in
 * the token class at least `min_chars` long, then n-grams of consecutive tokens counted per
 * output column, the column value by the TfIdfVectorizer mode times an optional scale (the
 * graph's Mul), the Normalizer's arithmetic (float), and the row times the coefficients.
 * Sums run in another order than onnxruntime's (its GEMM's blocks): results are ~1e-7 apart.
 * The caller adds intercepts and the post-transform (onnxruntime's own, in a tail model).
 *
 * No Python.h: plain C through ctypes, which releases the GIL for the call.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SQLML_TFIDF_ABI 2
#define MAX_GRAM 8
#define EMPTY (-1)

enum { MODE_TF = 0, MODE_IDF = 1, MODE_TFIDF = 2 };
enum { NORM_NONE = 0, NORM_L1 = 1, NORM_L2 = 2, NORM_MAX = 3 };

typedef struct {
    const uint8_t *case_map;    /* [256] the StringNormalizer's case change on ASCII */
    const uint8_t *token_class; /* [256] 1 where a (case-mapped) byte belongs to a token */
    int32_t min_chars;          /* the Tokenizer's mincharnum */
    int32_t tokens;             /* distinct tokens of the vocabulary's n-grams */
    const int64_t *token_offsets; /* [tokens + 1] into token_bytes */
    const uint8_t *token_bytes;
    uint64_t *token_heads; /* [tokens] first 8 bytes packed (filled by sqlml_tfidf_build) */
    int32_t *token_slots; /* [token_mask + 1] token id or EMPTY (filled by sqlml_tfidf_build) */
    int32_t token_mask;
    const int32_t *unigram_column; /* [tokens] output column of the 1-gram, or EMPTY */
    int32_t grams;                 /* n-grams with n >= 2 */
    const int32_t *gram_ids;       /* [grams, MAX_GRAM] token ids, EMPTY after the n-th */
    const int32_t *gram_column;    /* [grams] output column */
    int32_t *gram_slots; /* [gram_mask + 1] gram entry or EMPTY (filled by sqlml_tfidf_build) */
    int32_t gram_mask;
    int32_t min_n, max_n; /* n-gram lengths counted */
    int32_t mode;
    const float *weights; /* [columns] the TfIdfVectorizer's weights (IDF, TFIDF modes) */
    const float *scale;   /* [columns] a Mul after it, or NULL */
    int32_t columns;
    int32_t norm;
    const float *coefficients; /* [columns, classes] */
    int32_t classes;
} sqlml_tfidf_model;

int sqlml_tfidf_abi(void) { return SQLML_TFIDF_ABI; }

static inline uint32_t mix(uint64_t h) {
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return (uint32_t)h;
}

static inline uint64_t fold(uint64_t h, uint64_t word) { return (h ^ word) * 0x9e3779b97f4a7c15ULL; }

static inline uint32_t gram_hash(const int32_t *ids, int n) {
    uint64_t h = 0x2545f4914f6cdd1dULL;
    for (int i = 0; i < n; i++) h = fold(h, (uint32_t)ids[i]);
    return mix(h);
}

/* A token's key: its case-mapped bytes packed eight to a word, every word folded into the
 * hash; the first word (all of a token of up to 8 bytes, most tokens) is kept to compare
 * whole. The row scan computes the same incrementally. */
typedef struct {
    uint64_t head;
    uint32_t hash;
} token_key;

static token_key key_of(const uint8_t *bytes, int64_t length) {
    uint64_t h = 0x2545f4914f6cdd1dULL, word = 0, head = 0;
    for (int64_t i = 0; i < length; i++) {
        word = (word << 8) | bytes[i];
        if (((i + 1) & 7) == 0) {
            h = fold(h, word);
            if (!head) head = word;
            word = 0;
        }
    }
    if (length & 7) {
        h = fold(h, word);
        if (!head) head = word;
    }
    token_key key = {head, mix(h)};
    return key;
}

static int32_t find_token(const sqlml_tfidf_model *m, const uint8_t *byte_map,
                          const uint8_t *bytes, int64_t length, token_key key) {
    for (uint32_t slot = key.hash & (uint32_t)m->token_mask;; slot = (slot + 1) & m->token_mask) {
        int32_t id = m->token_slots[slot];
        if (id == EMPTY) return EMPTY;
        int64_t start = m->token_offsets[id];
        if (m->token_offsets[id + 1] - start != length || m->token_heads[id] != key.head) continue;
        int64_t i = 8;
        while (i < length && byte_map[bytes[i]] == m->token_bytes[start + i]) i++;
        if (i >= length) return id;
    }
}

static int32_t find_gram(const sqlml_tfidf_model *m, const int32_t *ids, int n) {
    uint32_t hash = gram_hash(ids, n);
    for (uint32_t slot = hash & (uint32_t)m->gram_mask;; slot = (slot + 1) & m->gram_mask) {
        int32_t entry = m->gram_slots[slot];
        if (entry == EMPTY) return EMPTY;
        const int32_t *key = m->gram_ids + (int64_t)entry * MAX_GRAM;
        int same = n == MAX_GRAM || key[n] == EMPTY;
        for (int i = 0; i < n && same; i++) same = key[i] == ids[i];
        if (same) return m->gram_column[entry];
    }
}

/* Fill the hash slots (the caller sets them all to EMPTY; tables at most half full). The
 * vocabulary's tokens are stored already case-mapped. */
void sqlml_tfidf_build(sqlml_tfidf_model *m) {
    for (int32_t id = 0; id < m->tokens; id++) {
        int64_t start = m->token_offsets[id], length = m->token_offsets[id + 1] - start;
        token_key key = key_of(m->token_bytes + start, length);
        m->token_heads[id] = key.head;
        uint32_t slot = key.hash & m->token_mask;
        while (m->token_slots[slot] != EMPTY) slot = (slot + 1) & m->token_mask;
        m->token_slots[slot] = id;
    }
    for (int32_t entry = 0; entry < m->grams; entry++) {
        const int32_t *ids = m->gram_ids + (int64_t)entry * MAX_GRAM;
        int n = 0;
        while (n < MAX_GRAM && ids[n] != EMPTY) n++;
        uint32_t slot = gram_hash(ids, n) & m->gram_mask;
        while (m->gram_slots[slot] != EMPTY) slot = (slot + 1) & m->gram_mask;
        m->gram_slots[slot] = entry;
    }
}

/* Count the row's n-grams into values[] (TF: occurrences; TFIDF: the weight added per
 * occurrence, as onnxruntime adds it; IDF: the weight once), listing each column on first touch. */
static int count_row(const sqlml_tfidf_model *m, const uint8_t *byte_map, const uint8_t *text,
                     int64_t length, float *values, uint8_t *listed_flag, int32_t *touched) {
    int32_t recent[MAX_GRAM]; /* the last max_n token ids, newest last */
    int seen = 0, listed = 0;
    int64_t i = 0;
    while (i < length) {
        uint8_t c = byte_map[text[i]];
        if (!c) {
            i++;
            continue;
        }
        int64_t start = i;
        uint64_t h = 0x2545f4914f6cdd1dULL, word = 0, head = 0;
        do { /* key_of(), while finding the token's end */
            word = (word << 8) | c;
            i++;
            if (((i - start) & 7) == 0) {
                h = fold(h, word);
                if (!head) head = word;
                word = 0;
            }
        } while (i < length && (c = byte_map[text[i]]));
        if ((i - start) & 7) {
            h = fold(h, word);
            if (!head) head = word;
        }
        if (i - start < m->min_chars) continue; /* ASCII: characters are bytes */
        token_key key = {head, mix(h)};
        int32_t id = find_token(m, byte_map, text + start, i - start, key);
        if (seen == m->max_n) {
            for (int k = 1; k < seen; k++) recent[k - 1] = recent[k];
        } else {
            seen++;
        }
        recent[seen - 1] = id;
        for (int n = m->min_n; n <= seen; n++) {
            const int32_t *ids = recent + seen - n;
            int known = 1;
            for (int k = 0; k < n; k++) known &= ids[k] != EMPTY;
            if (!known) continue;
            int32_t column = n == 1 ? m->unigram_column[ids[0]] : find_gram(m, ids, n);
            if (column == EMPTY) continue;
            if (!listed_flag[column]) {
                listed_flag[column] = 1;
                touched[listed++] = column;
            }
            if (m->mode == MODE_TF) values[column] += 1.0f;
            else if (m->mode == MODE_TFIDF) values[column] += m->weights[column];
            else values[column] = m->weights[column];
        }
    }
    return listed;
}

/* One row's scores from its values; clears what it touched. The untouched columns are zeros:
 * they change no sum, only MAX. Sums run in the order the row's n-grams came, not column
 * order (sorting cost 20% of the time): ~1e-7 from onnxruntime. */
static void score_row(const sqlml_tfidf_model *m, float *values, uint8_t *listed_flag,
                      int32_t *touched, int listed, float *out) {
    float total = 0.0f;
    if (m->norm == NORM_MAX && listed == m->columns) total = -INFINITY;
    for (int i = 0; i < listed; i++) {
        int32_t c = touched[i];
        float value = values[c];
        if (m->scale) values[c] = value = value * m->scale[c];
        if (m->norm == NORM_L2) total += value * value;
        else if (m->norm == NORM_L1) total += fabsf(value);
        else if (m->norm == NORM_MAX && value > total) total = value;
    }
    /* the Normalizer (a zero norm leaves the row as it is, as in onnxruntime); times the
     * reciprocal, where onnxruntime divides (L2: the root of each square over the sum) */
    float norm = m->norm == NORM_L2 ? sqrtf(total) : total;
    float factor = m->norm == NORM_NONE || norm == 0.0f ? 1.0f : 1.0f / norm;
    for (int k = 0; k < m->classes; k++) out[k] = 0.0f;
    for (int i = 0; i < listed; i++) {
        int32_t c = touched[i];
        float value = values[c] * factor;
        const float *weights = m->coefficients + (int64_t)c * m->classes;
        for (int k = 0; k < m->classes; k++) out[k] += value * weights[k];
        values[c] = 0.0f;
        listed_flag[c] = 0;
    }
}

/* scores[rows, classes] for an Arrow string array (offsets of `offset_bytes` = 4 or 8 bytes,
 * already moved to the array's first row). A row with a non-ASCII byte gets fallback[r] = 1
 * and zero scores. Returns the number of such rows, or -1 if memory ran out. */
int64_t sqlml_tfidf_scores(const sqlml_tfidf_model *m, const void *offsets, int32_t offset_bytes,
                           const uint8_t *data, int64_t rows, float *scores, uint8_t *fallback) {
    float *values = calloc((size_t)m->columns, sizeof(float));
    uint8_t *listed_flag = calloc((size_t)m->columns, 1);
    int32_t *touched = malloc((size_t)m->columns * sizeof(int32_t));
    if (!values || !listed_flag || !touched) {
        free(values);
        free(listed_flag);
        free(touched);
        return -1;
    }
    uint8_t byte_map[256]; /* the case-mapped byte where it belongs to a token, else 0 */
    for (int b = 0; b < 256; b++) byte_map[b] = m->token_class[m->case_map[b]] ? m->case_map[b] : 0;
    int64_t flagged = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t start, end;
        if (offset_bytes == 8) {
            start = ((const int64_t *)offsets)[r];
            end = ((const int64_t *)offsets)[r + 1];
        } else {
            start = ((const int32_t *)offsets)[r];
            end = ((const int32_t *)offsets)[r + 1];
        }
        const uint8_t *text = data + start;
        uint8_t high = 0;
        for (int64_t i = 0; i < end - start; i++) high |= text[i];
        float *out = scores + r * m->classes;
        fallback[r] = high >> 7;
        if (high >> 7) {
            flagged++;
            for (int k = 0; k < m->classes; k++) out[k] = 0.0f;
            continue;
        }
        int listed = count_row(m, byte_map, text, end - start, values, listed_flag, touched);
        score_row(m, values, listed_flag, touched, listed, out);
    }
    free(values);
    free(listed_flag);
    free(touched);
    return flagged;
}
