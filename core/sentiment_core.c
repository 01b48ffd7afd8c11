/* The model's scorer in C: what model.Preprocessor.read and model.Model.logit do, with the
 * settings of model.default_settings (model.py checks that the artifacts' settings are those before
 * it uses this), giving the same scores bit for bit. model.py's own scorer stays the reference:
 * tests/test_core.py checks that both agree.
 *
 * A tweet is read here when it is ASCII, after the HTML entities &amp; &lt; &gt; &quot; &#39; are
 * decoded: case-fold; drop URLs (https?://\S+|www\.\S+), then @mentions (@\w+), each counted for
 * its flag; fold apostrophes; tokenise ([^\W_]+|[!?]|<3|(?<!\w)[:;=][-o*]?[()\[\]dp/\\|*]+|[.,;:]).
 * Any other tweet is unescaped by html.unescape and, if it is not ASCII then, tokenised by
 * model.py (Preprocessor.raw_tokens). Either way each token is looked up in a table of what is
 * known of it (its stem's id, its valence, whether it is a negator or ends a clause). A token seen
 * for the first time is learned: if ASCII, here (elongations cut, stop words and separators left
 * out, stemmed by porter.c, NLTK's Porter stemmer), else from model.py's token caches. Then the
 * negation scope is marked; the terms (stems, neighbour pairs, negated stems) are each counted once
 * (a stamp per term says which tweet last counted it); their pulls are summed exactly and rounded
 * once, as math.fsum does (so their order does not matter), then the dense features, then the
 * sigmoid.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "porter.h"

#define VERSION 5  /* model.CORE_VERSION: model.py uses the core only if they are equal */

/* ---- Exact sums: CPython's math.fsum (msum), partials kept on the stack ---- */

typedef struct {
    double small[32];
    double *p;
    Py_ssize_t n, size;
} Sum;

static void sum_init(Sum *s) { s->p = s->small; s->n = 0; s->size = 32; }
static void sum_free(Sum *s) { if (s->p != s->small) PyMem_Free(s->p); }

static inline int sum_add(Sum *s, double x)
{
    Py_ssize_t i = 0, j;
    for (j = 0; j < s->n; j++) {
        double y = s->p[j], t, hi, lo, yr;
        if (fabs(x) < fabs(y)) { t = x; x = y; y = t; }
        hi = x + y;
        yr = hi - x;
        lo = y - yr;
        if (lo != 0.0) s->p[i++] = lo;
        x = hi;
    }
    s->n = i;
    if (x != 0.0) {
        if (s->n == s->size) {
            Py_ssize_t size = s->size * 2;
            double *p = PyMem_Malloc(size * sizeof(double));
            if (p == NULL) { PyErr_NoMemory(); return -1; }
            memcpy(p, s->p, s->n * sizeof(double));
            if (s->p != s->small) PyMem_Free(s->p);
            s->p = p;
            s->size = size;
        }
        s->p[s->n++] = x;
    }
    return 0;
}

static double sum_value(const Sum *s)
{
    double hi = 0.0, lo = 0.0, x, y, yr;
    Py_ssize_t n = s->n;
    if (n > 0) {
        hi = s->p[--n];
        while (n > 0) {
            x = hi;
            y = s->p[--n];
            hi = x + y;
            yr = hi - x;
            lo = y - yr;
            if (lo != 0.0) break;
        }
        if (n > 0 && ((lo < 0.0 && s->p[n - 1] < 0.0) || (lo > 0.0 && s->p[n - 1] > 0.0))) {
            y = lo * 2.0;
            x = hi + y;
            yr = x - hi;
            if (y == yr) hi = x;
        }
    }
    return hi;
}

/* ---- Exact sums of the model's pulls: fixed point in 128 bits ----
 * Each pull is a double, m * 2^e with a 53-bit integer m. Scaled by 2^-lowest (the smallest e
 * among the model's pulls) every pull is an integer, and so is any sum of them: integers add
 * exactly. The sum is rounded to a double once, half to even, which is the correctly rounded
 * sum math.fsum gives. It fits in 128 bits when the pulls span few enough binary orders of
 * magnitude (77 for the shipped model); a model whose pulls do not fit is summed with Sum. */

typedef __int128 Fixed;

/* The exponent of a double's lowest set bit (value != 0). */
static int last_bit(double value)
{
    int e;
    uint64_t m = (uint64_t)ldexp(fabs(frexp(value, &e)), 53);  /* value = ±m * 2^(e - 53) */
    return e - 53 + __builtin_ctzll(m);
}

/* Widen [*lowest, *highest) to hold a double's bits: its lowest set bit and 2^e > |value|. */
static void widen(double value, int *lowest, int *highest)
{
    int e;
    if (value == 0.0) return;
    frexp(value, &e);
    if (e > *highest) *highest = e;
    if (last_bit(value) < *lowest) *lowest = last_bit(value);
}

static Fixed to_fixed(double value, int lowest)
{
    return (Fixed)ldexp(value, -lowest);  /* an integer below 2^127, so exact */
}

/* Round a fixed-point sum to the nearest double, half to even. */
static double from_fixed(Fixed sum, int lowest)
{
    unsigned __int128 u = sum < 0 ? -(unsigned __int128)sum : (unsigned __int128)sum;
    uint64_t high = (uint64_t)(u >> 64), low = (uint64_t)u;
    int length = high ? 128 - __builtin_clzll(high) : low ? 64 - __builtin_clzll(low) : 0;
    int shift = length > 53 ? length - 53 : 0;  /* the bits below the 53 a double keeps */
    uint64_t kept = (uint64_t)(u >> shift);
    if (shift > 0) {
        unsigned __int128 rest = u & (((unsigned __int128)1 << shift) - 1);
        unsigned __int128 half = (unsigned __int128)1 << (shift - 1);
        if (rest > half || (rest == half && (kept & 1))) kept++;  /* 2^53 is still exact */
    }
    double value = ldexp((double)kept, shift + lowest);
    return sum < 0 ? -value : value;
}

/* ---- Character classes of the patterns, for ASCII after case-folding ---- */

enum { SPACE = 1, ALNUM = 2, WORD = 4, MOUTH = 8, CLAUSE_END_CHAR = 16, STARTS = 32 };
static uint8_t CLASS[256];

static void classes_init(void)
{
    for (int c = 0; c < 128; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        CLASS[c] = (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f) ? SPACE : 0) |
                   (alnum ? ALNUM : 0) |  /* Python's \s on str, within ASCII; and [^\W_] */
                   (alnum || c == '_' || (c >= 'A' && c <= 'Z') ? WORD : 0) |
                   (c && strchr("()[]dp/\\|*", c) ? MOUTH : 0) |
                   (c && strchr(".,;:!?", c) ? CLAUSE_END_CHAR : 0) |
                   (alnum || (c && strchr("!?<:;=.,", c)) ? STARTS : 0);  /* can start a token */
    }
}

static int is_space(unsigned char c) { return CLASS[c] & SPACE; }
static int is_alnum(unsigned char c) { return CLASS[c] & ALNUM; }
static int is_word(unsigned char c) { return CLASS[c] & WORD; }
static int is_mouth(unsigned char c) { return CLASS[c] & MOUTH; }
static int is_clause_end(unsigned char c) { return CLASS[c] & CLAUSE_END_CHAR; }

/* ---- What is known of each token: a table that learns ---- */

#define INLINE 13  /* a text this long or shorter is kept in its Token; longer, in the arena */
#define KEEP 64  /* model.TOKEN_KEEP_CHARS: a longer token is learned anew each time, not kept, so
                  * that the table and the arena stay small (token_limit * KEEP bytes at most) */
enum { HAS_STEM = 1, NEGATOR = 2, CLAUSE_END = 4 };

/* 32 bytes, stored in the table's own slots: finding a known token reads one of them. */
typedef struct {
    uint32_t hash;      /* the low half of its FNV-1a hash */
    int32_t stem;       /* the id of its stem among the model's; -1 if the model has none */
    double valence;
    uint16_t length;    /* 0 in an empty slot */
    uint8_t flags;      /* HAS_STEM (0 for a stop word or a separator: no term, no pair), ... */
    char text[INLINE];  /* its text, or where the arena holds it (a Py_ssize_t) */
} Token;

/* What a stem of the model's terms adds, and which tweet last counted it. */
typedef struct {
    Fixed word_fixed, negated_fixed;     /* the pulls of the stem and of "not → stem" */
    double word, negated;                /* the same, for a model whose pulls do not fit */
    uint32_t word_stamp, negated_stamp;
} Stem;

/* The model's pairs, by open addressing on their stem ids; the stamps are by slot. */
typedef struct {
    uint64_t key;  /* pair_key(first, second); 0 in an empty slot */
    double pull;
    Fixed fixed;
} Pair;

static uint64_t pair_key(int32_t first, int32_t second)
{
    return ((uint64_t)(uint32_t)(first + 1) << 32) | (uint32_t)(second + 1);
}

static Py_ssize_t pair_slot(uint64_t key, Py_ssize_t mask)
{
    return (Py_ssize_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & mask;  /* Fibonacci hashing */
}

typedef struct {
    PyObject_HEAD
    /* Learning a token: model.py's sets, lexicon and caches (see Scorer_init). */
    PyObject *negators, *unstemmed, *lexicon, *stem_ids, *stems, *valences;
    PyObject *raw_tokens, *unescape;
    /* The table (open addressing, at most half full), and the texts longer than INLINE. Emptied
     * when it holds token_limit tokens, as model.TokenCache is. */
    Token *table, spare;  /* spare: a token too long to keep, learned anew each time */
    Py_ssize_t mask, count, token_limit;
    char *arena;
    Py_ssize_t arena_used, arena_size;
    /* The model's terms by stem id, and which tweet is being read (terms are a set). */
    Stem *stem;
    Pair *pair;
    uint32_t *pair_stamp;
    Py_ssize_t stem_count, pair_mask;
    uint32_t stamp;
    int exact, lowest;  /* the pulls are summed in fixed point, scaled by 2^-lowest */
    /* One call at a time: the table and the stamps are the scorer's, and a call back to Python
     * (a token that is not ASCII, html.unescape) lets another thread run. */
    PyThread_type_lock lock;
    double intercept, scale, coefficients[4];
    int flags, scope, pairs;
} Scorer;

/* A token's hash, 8 bytes at a time. */
static uint64_t hash_text(const char *s, Py_ssize_t n)
{
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15ULL, w;
    for (; n >= 8; s += 8, n -= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    for (w = 0; n > 0; n--) w = (w << 8) | (unsigned char)s[n - 1];
    h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 32);
}

/* memcmp(a, b, n) == 0, without a call for the short texts most tokens are. */
static int same_text(const char *a, const char *b, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static const char *text_of(const Scorer *self, const Token *t)
{
    Py_ssize_t start;
    if (t->length <= INLINE) return t->text;
    memcpy(&start, t->text, sizeof start);
    return self->arena + start;
}

static void table_clear(Scorer *self)
{
    memset(self->table, 0, (self->mask + 1) * sizeof(Token));
    self->count = 0;
    self->arena_used = 0;
}

/* Twice the slots, the tokens placed again by their hashes. */
static int table_grow(Scorer *self)
{
    Py_ssize_t mask = self->mask * 2 + 1, i, k;
    Token *table = PyMem_Calloc(mask + 1, sizeof(Token));
    if (table == NULL) { PyErr_NoMemory(); return -1; }
    for (k = 0; k <= self->mask; k++) {
        if (self->table[k].length == 0) continue;
        for (i = self->table[k].hash & mask; table[i].length; i = (i + 1) & mask) {}
        table[i] = self->table[k];
    }
    PyMem_Free(self->table);
    self->table = table;
    self->mask = mask;
    return 0;
}

/* The id of a stem (a str) among the model's stems, or -1; -2 with an exception set. */
static int32_t stem_id(Scorer *self, PyObject *stem)
{
    PyObject *id = PyDict_GetItemWithError(self->stem_ids, stem);
    if (id == NULL) return PyErr_Occurred() ? -2 : -1;
    return (int32_t)PyLong_AsLong(id);
}

/* Learn an ASCII token as model.Preprocessor.normalise and lexicon_valence read it. */
static int learn_ascii(Scorer *self, const char *text, Py_ssize_t n, Token *found)
{
    char small[64], *cut = n + 1 <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc(n + 1);
    PyObject *raw = NULL, *key = NULL, *value, *stem = NULL;
    Py_ssize_t i, j, m = 0;
    int failed = 1, negator, unstemmed;
    if (cut == NULL) { PyErr_NoMemory(); return -1; }
    for (i = 0; i < n; i = j) {  /* a letter three or more times in a row: twice */
        for (j = i + 1; j < n && text[j] == text[i]; j++) {}
        Py_ssize_t keep = text[i] >= 'a' && text[i] <= 'z' && j - i >= 3 ? 2 : j - i;
        memset(cut + m, text[i], keep);
        m += keep;
    }
    raw = PyUnicode_FromStringAndSize(text, n);
    key = raw ? PyUnicode_FromStringAndSize(cut, m) : NULL;
    if (key == NULL) goto done;
    if ((negator = PySet_Contains(self->negators, raw)) < 0) goto done;
    if ((unstemmed = PySet_Contains(self->unstemmed, key)) < 0) goto done;
    value = PyDict_GetItemWithError(self->lexicon, key);
    if (value == NULL && PyErr_Occurred()) goto done;
    found->valence = value ? PyFloat_AsDouble(value) : 0.0;
    if (found->valence == -1.0 && PyErr_Occurred()) goto done;
    found->stem = -1;
    if (!unstemmed) {
        stem = PyUnicode_FromStringAndSize(cut, porter_stem(cut, m));
        if (stem == NULL || (found->stem = stem_id(self, stem)) == -2) goto done;
    }
    found->flags = (unstemmed ? 0 : HAS_STEM) | (negator ? NEGATOR : 0) |
                   (n == 1 && is_clause_end((unsigned char)text[0]) ? CLAUSE_END : 0);
    failed = 0;
done:
    if (cut != small) PyMem_Free(cut);
    Py_XDECREF(raw);
    Py_XDECREF(key);
    Py_XDECREF(stem);
    return failed ? -1 : 0;
}

/* Learn any other token (a str) from model.py's token caches, which compute what they lack. */
static int learn_from_python(Scorer *self, PyObject *token, Token *found)
{
    PyObject *stem = PyObject_GetItem(self->stems, token), *value = NULL;
    int failed = 1, negator;
    if (stem == NULL || !PyUnicode_Check(stem)) goto done;
    if ((value = PyObject_GetItem(self->valences, token)) == NULL) goto done;
    found->valence = PyFloat_AsDouble(value);
    if (found->valence == -1.0 && PyErr_Occurred()) goto done;
    if ((negator = PySet_Contains(self->negators, token)) < 0) goto done;
    found->stem = PyUnicode_GET_LENGTH(stem) > 0 ? stem_id(self, stem) : -1;
    if (found->stem == -2) goto done;
    /* Not ASCII, so not a clause end. */
    found->flags = (PyUnicode_GET_LENGTH(stem) > 0 ? HAS_STEM : 0) | (negator ? NEGATOR : 0);
    failed = 0;
done:
    if (failed && stem != NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "a token's stem must be a str");
    Py_XDECREF(stem);
    Py_XDECREF(value);
    return failed ? -1 : 0;
}

/* The Token for a token's text (its UTF-8 bytes), learned if new; `token` is the str when the
 * caller has it. NULL with an exception set on failure. */
static Token *token_of(Scorer *self, const char *text, Py_ssize_t n, PyObject *token)
{
    uint32_t hash = (uint32_t)hash_text(text, n);
    Py_ssize_t i, k;
    Token *t;
    for (i = hash & self->mask; (t = &self->table[i])->length; i = (i + 1) & self->mask)
        if (t->hash == hash && t->length == n && same_text(text_of(self, t), text, n)) return t;
    Token found = {hash, -1, 0.0, (uint16_t)n, 0, {0}};
    int ascii = 1;
    for (k = 0; k < n && ascii; k++) ascii = (unsigned char)text[k] < 128;
    if ((ascii ? learn_ascii(self, text, n, &found) : learn_from_python(self, token, &found)) < 0)
        return NULL;
    if (n > KEEP) {  /* too long to keep: no word anyone repeats, and it would grow the arena */
        self->spare = found;
        return &self->spare;
    }
    if (self->count >= self->token_limit) table_clear(self);  /* bounded, as model.TokenCache */
    if (2 * (self->count + 1) > self->mask + 1 && table_grow(self) < 0) return NULL;
    if (n <= INLINE)
        memcpy(found.text, text, n);
    else {
        if (self->arena_used + n > self->arena_size) {
            Py_ssize_t size = (self->arena_size + n) * 2;
            char *arena = PyMem_Realloc(self->arena, size);
            if (arena == NULL) { PyErr_NoMemory(); return NULL; }
            self->arena = arena;
            self->arena_size = size;
        }
        memcpy(self->arena + self->arena_used, text, n);
        memcpy(found.text, &self->arena_used, sizeof self->arena_used);
        self->arena_used += n;
    }
    for (i = hash & self->mask; self->table[i].length; i = (i + 1) & self->mask) {}
    self->table[i] = found;
    self->count++;
    return &self->table[i];
}

/* ---- One tweet: its tokens in, its logit out ---- */

typedef struct {
    Scorer *self;
    int since;            /* tokens since the last negator of this clause, once past its scope */
    int32_t previous;     /* the previous token's stem id: -1 none yet, or not the model's */
    Fixed fixed;          /* the pulls, when the scorer is exact; else in pulls */
    Sum pulls, positive, negative;
} Reading;

static void reading_start(Reading *r, Scorer *self)
{
    r->self = self;
    r->since = self->scope;
    r->previous = -1;
    r->fixed = 0;
    sum_init(&r->pulls);
    sum_init(&r->positive);
    sum_init(&r->negative);
    if (++self->stamp == 0) {  /* after 2^32 tweets the stamps start again from zero */
        for (Py_ssize_t k = 0; k < self->stem_count; k++)
            self->stem[k].word_stamp = self->stem[k].negated_stamp = 0;
        memset(self->pair_stamp, 0, (self->pair_mask + 1) * sizeof(uint32_t));
        self->stamp = 1;
    }
}

static void reading_free(Reading *r)
{
    sum_free(&r->pulls);
    sum_free(&r->positive);
    sum_free(&r->negative);
}

/* The slot of the model's pair (first, second), or -1. */
static Py_ssize_t pair_of(const Scorer *self, int32_t first, int32_t second)
{
    uint64_t key = pair_key(first, second);
    for (Py_ssize_t i = pair_slot(key, self->pair_mask); self->pair[i].key;
         i = (i + 1) & self->pair_mask)
        if (self->pair[i].key == key) return i;
    return -1;
}

static inline int add_pull(Reading *r, Fixed fixed, double pull)
{
    if (r->self->exact) {
        r->fixed += fixed;
        return 0;
    }
    return sum_add(&r->pulls, pull);
}

/* Read the next token: negation scope, valences, and each term the first time it comes. */
static int take(Reading *r, const Token *token)
{
    Scorer *self = r->self;
    uint32_t stamp = self->stamp;
    double valence = token->valence;
    Stem *stem = token->stem >= 0 ? &self->stem[token->stem] : NULL;
    if (token->flags & NEGATOR)
        r->since = 0;
    else if (token->flags & CLAUSE_END)
        r->since = self->scope;
    else if (r->since < self->scope) {
        r->since += 1;
        valence = -valence;
        if (stem != NULL && stem->negated_stamp != stamp) {
            stem->negated_stamp = stamp;
            if (add_pull(r, stem->negated_fixed, stem->negated) < 0) return -1;
        }
    }
    if (valence != 0.0 &&
        sum_add(valence > 0 ? &r->positive : &r->negative, valence > 0 ? valence : -valence) < 0)
        return -1;
    if (!(token->flags & HAS_STEM)) return 0;
    if (stem != NULL && stem->word_stamp != stamp) {
        stem->word_stamp = stamp;
        if (add_pull(r, stem->word_fixed, stem->word) < 0) return -1;
    }
    if (self->pairs && r->previous >= 0 && stem != NULL) {
        Py_ssize_t p = pair_of(self, r->previous, token->stem);
        if (p >= 0 && self->pair_stamp[p] != stamp) {
            self->pair_stamp[p] = stamp;
            if (add_pull(r, self->pair[p].fixed, self->pair[p].pull) < 0) return -1;
        }
    }
    r->previous = token->stem;
    return 0;
}

/* The logit once every token is read: the pulls, then the dense features. */
static int reading_logit(Reading *r, int url, int mention, double *out)
{
    Scorer *self = r->self;
    double dense[4];
    Sum sum;
    int k, failed = 0;
    dense[0] = log1p(sum_value(&r->positive)) * self->scale;
    dense[1] = log1p(sum_value(&r->negative)) * self->scale;
    dense[2] = url ? 1.0 : 0.0;
    dense[3] = mention ? 1.0 : 0.0;
    sum_init(&sum);
    for (k = 0; k < (self->flags ? 4 : 2) && !failed; k++)
        failed = sum_add(&sum, self->coefficients[k] * dense[k]) < 0;
    double pulls = self->exact ? from_fixed(r->fixed, self->lowest) : sum_value(&r->pulls);
    *out = self->intercept + pulls + sum_value(&sum);
    sum_free(&sum);
    return failed ? -1 : 0;
}

/* ---- Reading ASCII text as the patterns do ---- */

/* Drop what `pattern` matches, each match replaced by one space, as re.subn does. */
static Py_ssize_t drop_urls(const char *in, Py_ssize_t n, char *out, int *count)
{
    Py_ssize_t i = 0, o = 0;
    while (i < n) {
        Py_ssize_t k = -1;
        if (i + 7 <= n && memcmp(in + i, "http", 4) == 0) {
            Py_ssize_t j = i + 4;
            if (j < n && in[j] == 's') j++;
            if (j + 3 <= n && memcmp(in + j, "://", 3) == 0) {
                j += 3;
                if (j < n && !is_space(in[j])) k = j;
            }
        }
        if (k < 0 && i + 5 <= n && memcmp(in + i, "www.", 4) == 0 && !is_space(in[i + 4]))
            k = i + 4;
        if (k >= 0) {
            while (k < n && !is_space(in[k])) k++;
            out[o++] = ' ';
            *count += 1;
            i = k;
        }
        else
            out[o++] = in[i++];
    }
    return o;
}

static Py_ssize_t drop_mentions(const char *in, Py_ssize_t n, char *out, int *count)
{
    Py_ssize_t i = 0, o = 0;
    while (i < n) {
        if (in[i] == '@' && i + 1 < n && is_word(in[i + 1])) {
            Py_ssize_t k = i + 1;
            while (k < n && is_word(in[k])) k++;
            out[o++] = ' ';
            *count += 1;
            i = k;
        }
        else
            out[o++] = in[i++];
    }
    return o;
}

/* The next token at or after *at: its start and length, or 0 at the end. */
static int next_token(const char *s, Py_ssize_t n, Py_ssize_t *at, Py_ssize_t *start,
                      Py_ssize_t *length)
{
    Py_ssize_t i = *at;
    while (i < n) {
        unsigned char c = s[i];
        Py_ssize_t k = -1;
        if (!(CLASS[c] & STARTS)) { i++; continue; }
        if (is_alnum(c)) {
            k = i + 1;
            while (k < n && is_alnum(s[k])) k++;
        }
        else if (c == '!' || c == '?')
            k = i + 1;
        else if (c == '<' && i + 1 < n && s[i + 1] == '3')
            k = i + 2;
        else {
            if ((c == ':' || c == ';' || c == '=') && (i == 0 || !is_word(s[i - 1]))) {
                Py_ssize_t j = i + 1, m;
                if (j < n && (s[j] == '-' || s[j] == 'o' || s[j] == '*')) {  /* with a nose */
                    m = j + 1;
                    while (m < n && is_mouth(s[m])) m++;
                    if (m > j + 1) k = m;
                }
                if (k < 0) {  /* without one */
                    m = j;
                    while (m < n && is_mouth(s[m])) m++;
                    if (m > j) k = m;
                }
            }
            if (k < 0 && (c == '.' || c == ',' || c == ';' || c == ':'))
                k = i + 1;
        }
        if (k > 0) {
            *start = i;
            *length = k - i;
            *at = k;
            return 1;
        }
        i++;
    }
    *at = n;
    return 0;
}

static int has_www(const char *a, Py_ssize_t n)
{
    for (const char *w = memchr(a, 'w', n); w != NULL && w + 4 <= a + n;
         w = memchr(w + 1, 'w', a + n - w - 1))
        if (memcmp(w, "www.", 4) == 0) return 1;
    return 0;
}

/* The logit of ASCII text with no HTML entity left; a and b hold n characters each. */
static int ascii_logit(Scorer *self, const char *text, Py_ssize_t n, char *a, char *b, double *out)
{
    Py_ssize_t i, m, at = 0, start, length;
    int urls = 0, mentions = 0, failed = 0;
    Reading r;
    for (i = 0; i < n; i++) {
        unsigned char c = text[i];
        a[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    /* Each pass only where it may have something to do: a URL has "://" or "www.". */
    if (memchr(a, '/', n) != NULL || has_www(a, n)) {
        m = drop_urls(a, n, b, &urls);
        memcpy(a, b, m);
        n = m;
    }
    if (memchr(a, '@', n) != NULL) {
        m = drop_mentions(a, n, b, &mentions);
        memcpy(a, b, m);
        n = m;
    }
    if (memchr(a, '\'', n) != NULL) {  /* fold apostrophes */
        for (i = 0, m = 0; i < n; i++)
            if (a[i] != '\'') a[m++] = a[i];
        n = m;
    }
    reading_start(&r, self);
    while (!failed && next_token(a, n, &at, &start, &length)) {
        Token *token = token_of(self, a + start, length, NULL);
        failed = token == NULL || take(&r, token) < 0;
    }
    failed = failed || reading_logit(&r, urls, mentions, out) < 0;
    reading_free(&r);
    return failed ? -1 : 0;
}

/* The logit of any other text, tokenised by model.py: raw_tokens(text) -> (tokens, flags). */
static int python_logit(Scorer *self, PyObject *text, double *out)
{
    PyObject *read = PyObject_CallOneArg(self->raw_tokens, text), *tokens, *flags;
    Py_ssize_t i, n;
    int failed = 1, url, mention;
    Reading r;
    if (read == NULL) return -1;
    if (!PyArg_ParseTuple(read, "O!O!", &PyList_Type, &tokens, &PyList_Type, &flags) ||
        PyList_GET_SIZE(flags) != 2) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "raw_tokens: 2 flags expected");
        Py_DECREF(read);
        return -1;
    }
    url = PyObject_IsTrue(PyList_GET_ITEM(flags, 0));
    mention = PyObject_IsTrue(PyList_GET_ITEM(flags, 1));
    reading_start(&r, self);
    for (i = 0; i < PyList_GET_SIZE(tokens); i++) {
        PyObject *token = PyList_GET_ITEM(tokens, i);
        const char *utf8 = PyUnicode_Check(token) ? PyUnicode_AsUTF8AndSize(token, &n) : NULL;
        Token *t = utf8 ? token_of(self, utf8, n, token) : NULL;
        if (t == NULL || take(&r, t) < 0) goto done;
    }
    if (url < 0 || mention < 0 || reading_logit(&r, url, mention, out) < 0) goto done;
    failed = 0;
done:
    if (failed && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "tokens must be str");
    reading_free(&r);
    Py_DECREF(read);
    return failed ? -1 : 0;
}

/* Decode &amp; &lt; &gt; &quot; &#39; as html.unescape does; -1 if another '&' is left, which
 * html.unescape must read. Each of these is matched whole by its pattern (a name ends at ';'). */
static Py_ssize_t unescape_common(const char *in, Py_ssize_t n, char *out)
{
    static const struct { const char *entity; char c; } common[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&#39;", '\''},
    };
    Py_ssize_t i = 0, o = 0;
    while (i < n) {
        if (in[i] != '&') { out[o++] = in[i++]; continue; }
        int k, matched = 0;
        for (k = 0; k < 5 && !matched; k++) {
            Py_ssize_t length = (Py_ssize_t)strlen(common[k].entity);
            if (i + length <= n && memcmp(in + i, common[k].entity, length) == 0) {
                out[o++] = common[k].c;
                i += length;
                matched = 1;
            }
        }
        if (!matched) return -1;
    }
    return o;
}

static double sigmoid(double z)
{
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

/* The logit of ASCII text, read here once entities are decoded: 0, or -1 on an error, or 1 if
 * an entity is left that html.unescape must read. a, b and c hold n characters each. */
static int ascii_tweet_logit(Scorer *self, const char *text, Py_ssize_t n, char *a, char *b,
                             char *c, double *out)
{
    if (memchr(text, '&', n) == NULL) return ascii_logit(self, text, n, a, b, out);
    Py_ssize_t m = unescape_common(text, n, c);
    return m >= 0 ? ascii_logit(self, c, m, a, b, out) : 1;
}

/* The logit of one tweet (a str): read here if ASCII once entities are decoded, else by
 * python_logit. a, b and c hold its length in characters each. */
static int tweet_logit(Scorer *self, PyObject *tweet, char *a, char *b, char *c, double *out)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(tweet);
    PyObject *unescaped;
    int result;
    if (PyUnicode_IS_ASCII(tweet)) {
        result = ascii_tweet_logit(self, (const char *)PyUnicode_1BYTE_DATA(tweet), n, a, b, c, out);
        if (result <= 0) return result;
    }
    unescaped = PyObject_CallOneArg(self->unescape, tweet);
    if (unescaped == NULL) return -1;
    if (PyUnicode_Check(unescaped) && PyUnicode_IS_ASCII(unescaped) &&
        PyUnicode_GET_LENGTH(unescaped) <= n)
        result = ascii_logit(self, (const char *)PyUnicode_1BYTE_DATA(unescaped),
                             PyUnicode_GET_LENGTH(unescaped), a, b, out);
    else
        result = python_logit(self, unescaped, out);
    Py_DECREF(unescaped);
    return result;
}

/* The logit of the tweet in place at (text, n): ASCII bytes, as the str of them would be read. */
static int bytes_logit(Scorer *self, const char *text, Py_ssize_t n, char *a, char *b, char *c,
                       double *out)
{
    int result = ascii_tweet_logit(self, text, n, a, b, c, out);
    if (result <= 0) return result;
    PyObject *tweet = PyUnicode_FromStringAndSize(text, n);
    if (tweet == NULL) return -1;
    result = tweet_logit(self, tweet, a, b, c, out);
    Py_DECREF(tweet);
    return result;
}

/* The probability of Positive (or with logits, the log-odds) for each of seq's tweets: a tuple
 * of str, or with data, of str or None, None for the ASCII tweet at spans[2i] (its start in
 * data) and spans[2i + 1] (its length). */
/* The scores (logits: the log-odds) of seq's tweets (None: data's bytes at spans) as a list of
 * floats; or packed, as doubles in a bytes object (no float object made for each). */
static PyObject *score_all(Scorer *self, PyObject *seq, const char *data, const Py_ssize_t *spans,
                           int logits, int packed)
{
    PyObject *answer = NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(seq), i, longest = 0;
    char *buffers = NULL;
    for (i = 0; i < count; i++) {  /* every item is checked before any is scored */
        PyObject *tweet = PyTuple_GET_ITEM(seq, i);
        Py_ssize_t n;
        if (data != NULL && tweet == Py_None) {
            n = spans[2 * i + 1];
        } else if (PyUnicode_Check(tweet)) {
            n = PyUnicode_GET_LENGTH(tweet);
        } else {
            PyErr_Format(PyExc_TypeError, "tweet at index %zd must be a str, got %s", i,
                         Py_TYPE(tweet)->tp_name);
            return NULL;
        }
        if (n > longest) longest = n;
    }
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {  /* another thread is scoring */
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    answer = packed ? PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(double))
                    : PyList_New(count);
    buffers = PyMem_Malloc(3 * (longest + 1));
    if (answer == NULL || buffers == NULL) {
        if (answer != NULL) PyErr_NoMemory();
        Py_CLEAR(answer);
        goto done;
    }
    char *a = buffers, *b = buffers + longest + 1, *c = buffers + 2 * (longest + 1);
    for (i = 0; i < count; i++) {
        PyObject *tweet = PyTuple_GET_ITEM(seq, i), *score = NULL;
        double z;
        int result = tweet == Py_None
                         ? bytes_logit(self, data + spans[2 * i], spans[2 * i + 1], a, b, c, &z)
                         : tweet_logit(self, tweet, a, b, c, &z);
        if (result == 0 && packed) {
            double value = logits ? z : sigmoid(z);
            memcpy(PyBytes_AS_STRING(answer) + i * sizeof(double), &value, sizeof(double));
            continue;
        }
        if (result == 0) score = PyFloat_FromDouble(logits ? z : sigmoid(z));
        if (score == NULL) { Py_CLEAR(answer); break; }
        PyList_SET_ITEM(answer, i, score);
    }
done:
    PyThread_release_lock(self->lock);
    PyMem_Free(buffers);
    return answer;
}

/* The probability of Positive for each tweet; or with logits, the log-odds. */
static PyObject *score(Scorer *self, PyObject *tweets, int logits)
{
    PyObject *seq, *answer;
    if (PyUnicode_Check(tweets)) {
        PyErr_SetString(PyExc_TypeError, "tweets must be a list of strings, got a single string");
        return NULL;
    }
    seq = PySequence_Fast(tweets, "tweets must be a sequence of strings");
    if (seq != NULL && PyList_Check(seq))  /* a tuple: another thread cannot change it meanwhile */
        Py_SETREF(seq, PyList_AsTuple(seq));
    if (seq == NULL) return NULL;
    answer = score_all(self, seq, NULL, NULL, logits, 0);
    Py_DECREF(seq);
    return answer;
}

/* scores_in(data, spans, texts[, packed]): the probability of Positive for each tweet of a JSON
 * body as contract_core.scan read it in place: texts[i], or where it is None, the ASCII bytes of
 * data at spans (a start and a length for each, packed as Py_ssize_t). scan gives only ASCII
 * there: it is not looked at again (another byte is read as UTF-8, or fails, never out of
 * bounds). packed: as native doubles in a bytes object, not a list of floats. */
static PyObject *Scorer_scores_in(Scorer *self, PyObject *args)
{
    Py_buffer data, packed;
    PyObject *texts, *seq = NULL, *answer = NULL;
    int doubles = 0;
    if (!PyArg_ParseTuple(args, "y*y*O!|p", &data, &packed, &PyList_Type, &texts, &doubles))
        return NULL;
    const Py_ssize_t *spans = packed.buf;
    Py_ssize_t count = PyList_GET_SIZE(texts);
    if (packed.len != count * 2 * (Py_ssize_t)sizeof(Py_ssize_t)) {
        PyErr_SetString(PyExc_ValueError, "a start and a length are needed for each tweet");
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (spans[2 * i] < 0 || spans[2 * i + 1] < 0 || spans[2 * i] > data.len - spans[2 * i + 1]) {
            PyErr_SetString(PyExc_ValueError, "a tweet outside the body");
            goto done;
        }
    }
    seq = PyList_AsTuple(texts);  /* another thread cannot change it meanwhile */
    if (seq != NULL) answer = score_all(self, seq, data.buf, spans, 0, doubles);
done:
    Py_XDECREF(seq);
    PyBuffer_Release(&data);
    PyBuffer_Release(&packed);
    return answer;
}

static PyObject *Scorer_scores(Scorer *self, PyObject *tweets) { return score(self, tweets, 0); }
static PyObject *Scorer_logits(Scorer *self, PyObject *tweets) { return score(self, tweets, 1); }

/* ---- Building a scorer from the model's terms ---- */

static int doubles(PyObject *list, double **out, Py_ssize_t *count)
{
    PyObject *seq = PySequence_Fast(list, "expected a sequence of numbers");
    if (seq == NULL) return -1;
    *count = PySequence_Fast_GET_SIZE(seq);
    *out = PyMem_Calloc(*count ? *count : 1, sizeof(double));
    if (*out == NULL) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < *count; i++)
        (*out)[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
    Py_DECREF(seq);
    return PyErr_Occurred() ? -1 : 0;
}

static void free_terms(Scorer *self)
{
    PyMem_Free(self->stem);
    PyMem_Free(self->pair);
    PyMem_Free(self->pair_stamp);
    self->stem = NULL;
    self->pair = NULL;
    self->pair_stamp = NULL;
    self->stem_count = self->pair_mask = 0;
}

static void free_table(Scorer *self)
{
    PyMem_Free(self->table);
    PyMem_Free(self->arena);
    self->table = NULL;
    self->arena = NULL;
    self->mask = self->count = self->arena_used = self->arena_size = 0;
}

/* Choose the fixed-point scale, and whether every pull, and any sum of them, fits in it. */
static void fix_pulls(Scorer *self, Py_ssize_t pair_count)
{
    Py_ssize_t k, terms = 2 * self->stem_count + pair_count;
    int lowest = INT32_MAX, highest = INT32_MIN, bits = 126;  /* 126: the sign, room to carry */
    for (; terms > 0; terms >>= 1) bits--;  /* a tweet counts each term once at most */
    for (k = 0; k < self->stem_count; k++) {
        widen(self->stem[k].word, &lowest, &highest);
        widen(self->stem[k].negated, &lowest, &highest);
    }
    for (k = 0; k <= self->pair_mask; k++) widen(self->pair[k].pull, &lowest, &highest);
    self->lowest = lowest == INT32_MAX ? 0 : lowest;  /* no pull but zeros: any scale fits */
    self->exact = lowest == INT32_MAX || highest - lowest < bits;
    if (!self->exact) return;
    for (k = 0; k < self->stem_count; k++) {
        self->stem[k].word_fixed = to_fixed(self->stem[k].word, self->lowest);
        self->stem[k].negated_fixed = to_fixed(self->stem[k].negated, self->lowest);
    }
    for (k = 0; k <= self->pair_mask; k++)
        self->pair[k].fixed = to_fixed(self->pair[k].pull, self->lowest);
}

/* The stems' pulls, by id, and the pairs (a, b, pull), each once. */
static int read_terms(Scorer *self, PyObject *words, PyObject *negated, PyObject *pairs_list)
{
    double *word = NULL, *negation = NULL;
    Py_ssize_t n, n_negated, k, count, i;
    PyObject *seq = NULL;
    int failed = 1;
    if (doubles(words, &word, &n) < 0 || doubles(negated, &negation, &n_negated) < 0) goto done;
    if (n != n_negated || n != PyDict_GET_SIZE(self->stem_ids)) {
        PyErr_SetString(PyExc_ValueError, "one word pull and one negated pull per stem id");
        goto done;
    }
    self->stem_count = n;
    self->stem = PyMem_Calloc(n ? n : 1, sizeof(Stem));
    if (self->stem == NULL) { PyErr_NoMemory(); goto done; }
    for (k = 0; k < n; k++) {
        self->stem[k].word = word[k];
        self->stem[k].negated = negation[k];
    }
    seq = PySequence_Fast(pairs_list, "pair_pulls must be a sequence of (id, id, pull)");
    if (seq == NULL) goto done;
    count = PySequence_Fast_GET_SIZE(seq);
    for (self->pair_mask = 1023; self->pair_mask + 1 < 3 * count; )  /* at most a third full */
        self->pair_mask = self->pair_mask * 2 + 1;
    self->pair = PyMem_Calloc(self->pair_mask + 1, sizeof(Pair));
    self->pair_stamp = PyMem_Calloc(self->pair_mask + 1, sizeof(uint32_t));
    if (self->pair == NULL || self->pair_stamp == NULL) { PyErr_NoMemory(); goto done; }
    for (k = 0; k < count; k++) {
        Py_ssize_t a, b;
        double pull;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, k), "nnd", &a, &b, &pull)) goto done;
        if (a < 0 || b < 0 || a >= n || b >= n || pair_of(self, (int32_t)a, (int32_t)b) >= 0) {
            PyErr_SetString(PyExc_ValueError, "pair_pulls: each pair once, by stem ids in range");
            goto done;
        }
        uint64_t key = pair_key((int32_t)a, (int32_t)b);
        for (i = pair_slot(key, self->pair_mask); self->pair[i].key; i = (i + 1) & self->pair_mask) {}
        self->pair[i].key = key;
        self->pair[i].pull = pull;
    }
    fix_pulls(self, count);
    failed = 0;
done:
    PyMem_Free(word);
    PyMem_Free(negation);
    Py_XDECREF(seq);
    return failed ? -1 : 0;
}

static int Scorer_init(Scorer *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"stem_ids", "word_pulls", "negated_pulls", "pair_pulls", "negators",
                            "unstemmed", "lexicon", "stems", "valences", "raw_tokens",
                            "unescape", "intercept", "scale", "coefficients", "scope", "pairs",
                            "token_limit", NULL};
    PyObject *stem_ids, *words, *negated, *pairs_list, *negators, *unstemmed, *lexicon, *stems;
    PyObject *valences, *raw_tokens, *unescape, *coefficients;
    double intercept, scale, *dense = NULL;
    int scope, pairs;
    Py_ssize_t k, n, limit = 50000;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOOO!O!O!OOOOddOip|n", names,
                                     &PyDict_Type, &stem_ids, &words, &negated, &pairs_list,
                                     &PyFrozenSet_Type, &negators, &PyFrozenSet_Type, &unstemmed,
                                     &PyDict_Type, &lexicon, &stems, &valences, &raw_tokens,
                                     &unescape, &intercept, &scale, &coefficients, &scope, &pairs,
                                     &limit))
        return -1;
    if (self->lock == NULL && (self->lock = PyThread_allocate_lock()) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (limit < 1 || limit > (1 << 29)) {
        PyErr_SetString(PyExc_ValueError, "token_limit must be from 1 to 2^29");
        return -1;
    }
    if (doubles(coefficients, &dense, &n) < 0) { PyMem_Free(dense); return -1; }
    if (n != 2 && n != 4) {
        PyMem_Free(dense);
        PyErr_SetString(PyExc_ValueError, "coefficients must be 2 or 4 numbers");
        return -1;
    }
    for (k = 0; k < 4; k++) self->coefficients[k] = k < n ? dense[k] : 0.0;
    PyMem_Free(dense);
    self->flags = n == 4;
    Py_XSETREF(self->stem_ids, Py_NewRef(stem_ids));
    free_terms(self);
    if (read_terms(self, words, negated, pairs_list) < 0) return -1;
    self->stamp = 0;
    free_table(self);
    self->mask = 1023;
    self->table = PyMem_Calloc(self->mask + 1, sizeof(Token));
    if (self->table == NULL) { PyErr_NoMemory(); return -1; }
    self->token_limit = limit;
    Py_XSETREF(self->negators, Py_NewRef(negators));
    Py_XSETREF(self->unstemmed, Py_NewRef(unstemmed));
    Py_XSETREF(self->lexicon, Py_NewRef(lexicon));
    Py_XSETREF(self->stems, Py_NewRef(stems));
    Py_XSETREF(self->valences, Py_NewRef(valences));
    Py_XSETREF(self->raw_tokens, Py_NewRef(raw_tokens));
    Py_XSETREF(self->unescape, Py_NewRef(unescape));
    self->intercept = intercept;
    self->scale = scale;
    self->scope = scope;
    self->pairs = pairs;
    return 0;
}

static int Scorer_traverse(Scorer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->negators);
    Py_VISIT(self->unstemmed);
    Py_VISIT(self->lexicon);
    Py_VISIT(self->stem_ids);
    Py_VISIT(self->stems);
    Py_VISIT(self->valences);
    Py_VISIT(self->raw_tokens);
    Py_VISIT(self->unescape);
    return 0;
}

static int Scorer_clear(Scorer *self)
{
    Py_CLEAR(self->negators);
    Py_CLEAR(self->unstemmed);
    Py_CLEAR(self->lexicon);
    Py_CLEAR(self->stem_ids);
    Py_CLEAR(self->stems);
    Py_CLEAR(self->valences);
    Py_CLEAR(self->raw_tokens);
    Py_CLEAR(self->unescape);
    return 0;
}

static void Scorer_dealloc(Scorer *self)
{
    PyObject_GC_UnTrack(self);
    Scorer_clear(self);
    free_terms(self);
    free_table(self);
    if (self->lock != NULL) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *porter(PyObject *Py_UNUSED(module), PyObject *word)
{
    Py_ssize_t n;
    if (!PyUnicode_Check(word) || !PyUnicode_IS_ASCII(word)) {
        PyErr_SetString(PyExc_ValueError, "porter_stem takes an ASCII str");
        return NULL;
    }
    n = PyUnicode_GET_LENGTH(word);
    char *b = PyMem_Malloc(n + 1);
    if (b == NULL) return PyErr_NoMemory();
    memcpy(b, PyUnicode_1BYTE_DATA(word), n);
    PyObject *stem = PyUnicode_FromStringAndSize(b, porter_stem(b, n));
    PyMem_Free(b);
    return stem;
}

static PyMethodDef Scorer_methods[] = {
    {"scores", (PyCFunction)Scorer_scores, METH_O,
     "Return the probability of Positive for each tweet, as model.Model.scores does."},
    {"logits", (PyCFunction)Scorer_logits, METH_O,
     "Return each tweet's log-odds of Positive, as model.Model.logit does."},
    {"scores_in", (PyCFunction)Scorer_scores_in, METH_VARARGS,
     "scores_in(data, spans, texts[, packed]): scores of a JSON body's tweets read in place "
     "(contract_core.scan); packed, as doubles in bytes."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Scorer_members[] = {
    {"exact", T_INT, offsetof(Scorer, exact), READONLY,
     "1 if the pulls are summed in fixed point, 0 if as math.fsum sums them"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ScorerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sentiment_core.Scorer",
    .tp_doc = "The model's scorer: model.py's reading and logit, in C.",
    .tp_basicsize = sizeof(Scorer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scorer_init,
    .tp_dealloc = (destructor)Scorer_dealloc,
    .tp_traverse = (traverseproc)Scorer_traverse,
    .tp_clear = (inquiry)Scorer_clear,
    .tp_methods = Scorer_methods,
    .tp_members = Scorer_members,
};

static PyMethodDef module_methods[] = {
    {"porter_stem", porter, METH_O,
     "Stem a lower-case ASCII word as NLTK's PorterStemmer(NLTK_EXTENSIONS).stem does."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sentiment_core",
    "The sentiment model's scorer in C (see model.py; the pure-Python scorer is the reference).",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_sentiment_core(void)
{
    PyObject *m;
    classes_init();
    if (PyType_Ready(&ScorerType) < 0) return NULL;
    m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "VERSION", VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ScorerType);
    if (PyModule_AddObject(m, "Scorer", (PyObject *)&ScorerType) < 0) {
        Py_DECREF(&ScorerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
