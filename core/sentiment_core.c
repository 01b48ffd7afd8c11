/* The model's scorer in C, for the tweets it can read exactly as model.py does: ASCII text
 * (after HTML entities are decoded). Every other tweet goes to model.py's own scorer (the fallback), which
 * stays the reference: tests/test_core.py checks that both give the same scores, bit for bit.
 *
 * A tweet with '&' is unescaped first (html.unescape, as model.py does); read here if it is ASCII
 * then. It does what model.Preprocessor.read and model.Model.logit do, with the settings of
 * model.default_settings (model.py checks that the artifacts' settings are those before it uses
 * this): case-fold; drop URLs (https?://\S+|www\.\S+), then @mentions (@\w+), each counted for
 * its flag; fold apostrophes; tokenise ([^\W_]+|[!?]|<3|(?<!\w)[:;=][-o*]?[()\[\]dp/\\|*]+|
 * [.,;:]); look each token up in the Python token caches (stem, valence), so that stemming stays
 * model.py's; mark negation scope; build the set of terms (tokens, neighbour pairs, negated
 * words); add their pulls exactly as math.fsum does (correctly rounded, so the order of the set
 * does not matter), then the dense features, then the sigmoid.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* What a token is, once looked up: kept here so that a warm tweet makes no Python object. */
typedef struct {
    char *text;       /* the token (not NUL-terminated), or NULL for an empty slot */
    Py_ssize_t length;
    uint64_t hash;
    Py_ssize_t stem;  /* the id of its stem among the model's, -1 if the model has none */
    int has_stem;     /* 0 for a stop word or a separator: no term, no pair */
    int negator;
    double valence;
} Token;

/* A term by ids: kind 0 a word (a = its stem), 1 a negated word, 2 a pair (a, b). */
typedef struct {
    uint64_t key;  /* 0 for an empty slot */
    double pull;
} Slot;

static uint64_t term_key(int kind, Py_ssize_t a, Py_ssize_t b)
{
    return ((uint64_t)kind << 62) | ((uint64_t)(a + 1) << 31) | (uint64_t)(b + 1);
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

typedef struct {
    PyObject_HEAD
    PyObject *stems;     /* token -> stem ("" for a stop word or a separator): a TokenCache */
    PyObject *valences;  /* token -> the lexicon's valence, 0.0 if none: a TokenCache */
    PyObject *negators;  /* frozenset of tokens */
    PyObject *pulls;     /* dict: term -> coefficient * log-count ratio */
    PyObject *mark;      /* "not → " */
    PyObject *fallback;  /* callable: tweet -> probability, for what this does not read */
    PyObject *unescape;  /* html.unescape, for a tweet with '&' */
    PyObject *stem_ids;  /* dict: each stem of the model's terms -> its id */
    double *word_pulls, *negated_pulls;  /* by stem id */
    Slot *pair_pulls;    /* open addressing by term_key(2, a, b); a power of two of slots */
    Py_ssize_t pair_mask;
    Token *tokens;       /* open addressing by the token's FNV-1a hash */
    Py_ssize_t token_mask, token_count, token_limit;
    double intercept, scale, coefficients[4];
    int flags, scope, pairs;
} Scorer;

static uint64_t fnv1a(const char *s, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return h;
}

static void tokens_clear(Scorer *self)
{
    if (self->tokens == NULL) return;
    for (Py_ssize_t i = 0; i <= self->token_mask; i++) {
        PyMem_Free(self->tokens[i].text);
        self->tokens[i].text = NULL;
    }
    self->token_count = 0;
}

/* The Token for a token's text: looked up here, or else in the Python caches and kept. */
static Token *token_of(Scorer *self, const char *text, Py_ssize_t n)
{
    uint64_t hash = fnv1a(text, n);
    Py_ssize_t i = (Py_ssize_t)(hash & self->token_mask);
    while (self->tokens[i].text != NULL) {
        Token *t = &self->tokens[i];
        if (t->hash == hash && t->length == n && memcmp(t->text, text, n) == 0) return t;
        i = (i + 1) & self->token_mask;
    }
    if (self->token_count >= self->token_limit) {  /* bounded, as model.TokenCache is */
        tokens_clear(self);
        i = (Py_ssize_t)(hash & self->token_mask);
    }
    PyObject *token = PyUnicode_FromStringAndSize(text, n), *stem = NULL, *value = NULL, *id;
    if (token == NULL) return NULL;
    Token found = {NULL, n, hash, -1, 0, 0, 0.0};
    stem = PyObject_GetItem(self->stems, token);
    if (stem == NULL) goto fail;
    value = PyObject_GetItem(self->valences, token);
    if (value == NULL) goto fail;
    found.valence = PyFloat_AsDouble(value);
    if (found.valence == -1.0 && PyErr_Occurred()) goto fail;
    found.negator = PySet_Contains(self->negators, token);
    if (found.negator < 0) goto fail;
    found.has_stem = PyUnicode_GET_LENGTH(stem) > 0;
    id = PyDict_GetItemWithError(self->stem_ids, stem);
    if (id == NULL && PyErr_Occurred()) goto fail;
    found.stem = id ? PyLong_AsSsize_t(id) : -1;
    found.text = PyMem_Malloc(n ? n : 1);
    if (found.text == NULL) { PyErr_NoMemory(); goto fail; }
    memcpy(found.text, text, n);
    Py_DECREF(token);
    Py_DECREF(stem);
    Py_DECREF(value);
    self->tokens[i] = found;
    self->token_count++;
    return &self->tokens[i];
fail:
    Py_DECREF(token);
    Py_XDECREF(stem);
    Py_XDECREF(value);
    return NULL;
}

static double pair_pull(Scorer *self, uint64_t key)
{
    Py_ssize_t i = (Py_ssize_t)(mix(key) & self->pair_mask);
    while (self->pair_pulls[i].key != 0) {
        if (self->pair_pulls[i].key == key) return self->pair_pulls[i].pull;
        i = (i + 1) & self->pair_mask;
    }
    return 0.0;
}

/* A tweet's terms, each once: a small open-addressing set of keys. Returns 1 if new. */
static int seen_add(uint64_t *seen, Py_ssize_t mask, uint64_t key)
{
    Py_ssize_t i = (Py_ssize_t)(mix(key) & mask);
    while (seen[i] != 0) {
        if (seen[i] == key) return 0;
        i = (i + 1) & mask;
    }
    seen[i] = key;
    return 1;
}

/* Exact, correctly rounded summation of finite doubles: CPython's math.fsum (msum). */
typedef struct {
    double small[64];
    double *p;
    Py_ssize_t n, size;
} Partials;

static void partials_init(Partials *s) { s->p = s->small; s->n = 0; s->size = 64; }
static void partials_free(Partials *s) { if (s->p != s->small) PyMem_Free(s->p); }

static int partials_add(Partials *s, double x)
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

static double partials_sum(Partials *s)
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

/* Character classes of the patterns, for ASCII after case-folding. */
static int is_space(unsigned char c)  /* Python's \s on str, within ASCII */
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}
static int is_alnum(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
static int is_word(unsigned char c) { return is_alnum(c) || c == '_' || (c >= 'A' && c <= 'Z'); }
static int is_mouth(unsigned char c) { return c && strchr("()[]dp/\\|*", c) != NULL; }

/* Drop what `pattern` matches, each match replaced by one space, as re.subn does. */
static Py_ssize_t drop_urls(const char *in, Py_ssize_t n, char *out, Py_ssize_t *count)
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
            (*count)++;
            i = k;
        }
        else
            out[o++] = in[i++];
    }
    return o;
}

static Py_ssize_t drop_mentions(const char *in, Py_ssize_t n, char *out, Py_ssize_t *count)
{
    Py_ssize_t i = 0, o = 0;
    while (i < n) {
        if (in[i] == '@' && i + 1 < n && is_word(in[i + 1])) {
            Py_ssize_t k = i + 1;
            while (k < n && is_word(in[k])) k++;
            out[o++] = ' ';
            (*count)++;
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

/* The logit of one ASCII tweet without '&'; -1 with an exception set on failure. seen has
 * mask + 1 zeroed slots, at least twice the terms the tweet can have. */
static int logit_of(Scorer *self, const char *text, Py_ssize_t n, char *a, char *b,
                    uint64_t *seen, Py_ssize_t mask, double *out)
{
    Py_ssize_t i, urls = 0, mentions = 0, at = 0, start, length, m;
    Py_ssize_t previous = -2;  /* the previous stem's id; -2 none yet, -1 not the model's */
    Partials pulls, positive, negative, sum;
    int since = self->scope, failed = 0, k, count;
    double dense[4], z;

    for (i = 0; i < n; i++) {
        unsigned char c = text[i];
        a[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : (char)c;
    }
    m = drop_urls(a, n, b, &urls);
    m = drop_mentions(b, m, a, &mentions);
    for (i = 0, n = 0; i < m; i++)  /* fold apostrophes */
        if (a[i] != '\'') a[n++] = a[i];

    partials_init(&pulls);
    partials_init(&positive);
    partials_init(&negative);
    while (!failed && next_token(a, n, &at, &start, &length)) {
        Token *token = token_of(self, a + start, length);
        double valence;
        if (token == NULL) { failed = 1; break; }
        valence = token->valence;
        if (token->negator)
            since = 0;
        else if (length == 1 && strchr(".,;:!?", a[start]) != NULL)
            since = self->scope;
        else if (since < self->scope) {
            since += 1;
            valence = -valence;
            if (token->has_stem && token->stem >= 0 &&
                seen_add(seen, mask, term_key(1, token->stem, 0)))
                failed = partials_add(&pulls, self->negated_pulls[token->stem]) < 0;
        }
        if (!failed && valence != 0.0)
            failed = partials_add(valence > 0 ? &positive : &negative,
                                  valence > 0 ? valence : -valence) < 0;
        if (!failed && token->has_stem) {
            Py_ssize_t stem = token->stem;
            if (stem >= 0 && seen_add(seen, mask, term_key(0, stem, 0)))
                failed = partials_add(&pulls, self->word_pulls[stem]) < 0;
            if (!failed && self->pairs && previous >= 0 && stem >= 0) {
                uint64_t key = term_key(2, previous, stem);
                if (seen_add(seen, mask, key)) failed = partials_add(&pulls, pair_pull(self, key)) < 0;
            }
            previous = stem;
        }
    }
    if (!failed) {
        count = self->flags ? 4 : 2;
        dense[0] = log1p(partials_sum(&positive)) * self->scale;
        dense[1] = log1p(partials_sum(&negative)) * self->scale;
        dense[2] = urls ? 1.0 : 0.0;
        dense[3] = mentions ? 1.0 : 0.0;
        partials_init(&sum);
        for (k = 0; k < count && !failed; k++)
            failed = partials_add(&sum, self->coefficients[k] * dense[k]) < 0;
        z = self->intercept + partials_sum(&pulls);
        *out = z + partials_sum(&sum);
        partials_free(&sum);
    }
    partials_free(&pulls);
    partials_free(&positive);
    partials_free(&negative);
    return failed ? -1 : 0;
}

static double sigmoid(double z)
{
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

static PyObject *Scorer_scores(Scorer *self, PyObject *tweets)
{
    PyObject *seq, *answer = NULL;
    Py_ssize_t count, i, longest = 0;
    char *a = NULL, *b = NULL;
    uint64_t *seen = NULL;
    Py_ssize_t mask = 63;

    if (PyUnicode_Check(tweets)) {
        PyErr_SetString(PyExc_TypeError, "tweets must be a list of strings, got a single string");
        return NULL;
    }
    seq = PySequence_Fast(tweets, "tweets must be a sequence of strings");
    if (seq == NULL) return NULL;
    count = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < count; i++) {  /* every item is checked before any is scored */
        PyObject *tweet = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(tweet)) {
            PyErr_Format(PyExc_TypeError, "tweet at index %zd must be a str, got %s", i,
                         Py_TYPE(tweet)->tp_name);
            goto done;
        }
        if (PyUnicode_GET_LENGTH(tweet) > longest) longest = PyUnicode_GET_LENGTH(tweet);
    }
    while (mask + 1 < 4 * (longest + 1)) mask = mask * 2 + 1;  /* at most 3 terms a token */
    answer = PyList_New(count);
    a = PyMem_Malloc(longest + 1);
    b = PyMem_Malloc(longest + 1);
    seen = PyMem_Calloc(mask + 1, sizeof(uint64_t));
    if (answer == NULL || a == NULL || b == NULL || seen == NULL) {
        if (answer != NULL) PyErr_NoMemory();
        Py_CLEAR(answer);
        goto done;
    }
    for (i = 0; i < count; i++) {
        PyObject *tweet = PySequence_Fast_GET_ITEM(seq, i), *score, *unescaped = NULL;
        Py_ssize_t n = PyUnicode_GET_LENGTH(tweet);
        const char *text = PyUnicode_IS_ASCII(tweet) ? (const char *)PyUnicode_1BYTE_DATA(tweet)
                                                     : NULL;
        double z;
        if (text != NULL && memchr(text, '&', n) != NULL) {  /* HTML entities, as model.py */
            unescaped = PyObject_CallOneArg(self->unescape, tweet);
            if (unescaped == NULL) { Py_CLEAR(answer); goto done; }
            if (PyUnicode_Check(unescaped) && PyUnicode_IS_ASCII(unescaped) &&
                PyUnicode_GET_LENGTH(unescaped) <= longest) {
                n = PyUnicode_GET_LENGTH(unescaped);
                text = (const char *)PyUnicode_1BYTE_DATA(unescaped);
            }
            else
                text = NULL;
        }
        if (text == NULL)
            score = PyObject_CallOneArg(self->fallback, tweet);
        else {
            Py_ssize_t own = 63;  /* this tweet's share of seen: over 4 slots a character */
            while (own + 1 < 4 * (n + 1)) own = own * 2 + 1;
            int failed = logit_of(self, text, n, a, b, seen, own, &z) < 0;
            memset(seen, 0, (own + 1) * sizeof(uint64_t));  /* cleared for the next tweet */
            score = failed ? NULL : PyFloat_FromDouble(sigmoid(z));
        }
        Py_XDECREF(unescaped);
        if (score == NULL) { Py_CLEAR(answer); goto done; }
        PyList_SET_ITEM(answer, i, score);
    }
done:
    PyMem_Free(a);
    PyMem_Free(b);
    PyMem_Free(seen);
    Py_DECREF(seq);
    return answer;
}

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

static int Scorer_init(Scorer *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"stems", "valences", "negators", "stem_ids", "word_pulls",
                            "negated_pulls", "pair_pulls", "fallback", "intercept", "scale",
                            "coefficients", "scope", "pairs", "unescape", "token_limit", NULL};
    PyObject *stems, *valences, *negators, *stem_ids, *words, *negated, *pairs_list, *fallback;
    PyObject *unescape;
    PyObject *coefficients, *seq;
    double intercept, scale, *dense = NULL;
    int scope, pairs;
    Py_ssize_t k, n, n_words, n_negated, limit = 40000;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!O!OOOOddOipO|n", names, &stems,
                                     &valences, &PyFrozenSet_Type, &negators, &PyDict_Type,
                                     &stem_ids, &words, &negated, &pairs_list, &fallback,
                                     &intercept, &scale, &coefficients, &scope, &pairs, &unescape,
                                     &limit))
        return -1;
    if (doubles(coefficients, &dense, &n) < 0) { PyMem_Free(dense); return -1; }
    if (n != 2 && n != 4) {
        PyMem_Free(dense);
        PyErr_SetString(PyExc_ValueError, "coefficients must be 2 or 4 numbers");
        return -1;
    }
    for (k = 0; k < 4; k++) self->coefficients[k] = k < n ? dense[k] : 0.0;
    PyMem_Free(dense);
    self->flags = n == 4;
    PyMem_Free(self->word_pulls);
    PyMem_Free(self->negated_pulls);
    self->word_pulls = self->negated_pulls = NULL;
    if (doubles(words, &self->word_pulls, &n_words) < 0) return -1;
    if (doubles(negated, &self->negated_pulls, &n_negated) < 0) return -1;
    if (n_words != n_negated || n_words != PyDict_GET_SIZE(stem_ids)) {
        PyErr_SetString(PyExc_ValueError, "one word pull and one negated pull per stem id");
        return -1;
    }
    seq = PySequence_Fast(pairs_list, "pair_pulls must be a sequence of (id, id, pull)");
    if (seq == NULL) return -1;
    n = PySequence_Fast_GET_SIZE(seq);
    for (self->pair_mask = 1023; self->pair_mask + 1 < 2 * n; ) self->pair_mask = self->pair_mask * 2 + 1;
    PyMem_Free(self->pair_pulls);
    self->pair_pulls = PyMem_Calloc(self->pair_mask + 1, sizeof(Slot));
    if (self->pair_pulls == NULL) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
    for (k = 0; k < n; k++) {
        Py_ssize_t a, b;
        double pull;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, k), "nnd", &a, &b, &pull)) {
            Py_DECREF(seq);
            return -1;
        }
        uint64_t key = term_key(2, a, b);
        Py_ssize_t i = (Py_ssize_t)(mix(key) & self->pair_mask);
        while (self->pair_pulls[i].key != 0) i = (i + 1) & self->pair_mask;
        self->pair_pulls[i].key = key;
        self->pair_pulls[i].pull = pull;
    }
    Py_DECREF(seq);
    tokens_clear(self);
    PyMem_Free(self->tokens);
    for (self->token_mask = 1023; self->token_mask + 1 < 2 * limit; )
        self->token_mask = self->token_mask * 2 + 1;
    self->tokens = PyMem_Calloc(self->token_mask + 1, sizeof(Token));
    if (self->tokens == NULL) { PyErr_NoMemory(); return -1; }
    self->token_count = 0;
    self->token_limit = limit;
    Py_INCREF(stems);
    Py_XSETREF(self->stems, stems);
    Py_INCREF(valences);
    Py_XSETREF(self->valences, valences);
    Py_INCREF(negators);
    Py_XSETREF(self->negators, negators);
    Py_INCREF(stem_ids);
    Py_XSETREF(self->stem_ids, stem_ids);
    Py_INCREF(fallback);
    Py_XSETREF(self->fallback, fallback);
    Py_INCREF(unescape);
    Py_XSETREF(self->unescape, unescape);
    self->intercept = intercept;
    self->scale = scale;
    self->scope = scope;
    self->pairs = pairs;
    return 0;
}

static int Scorer_traverse(Scorer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->stems);
    Py_VISIT(self->valences);
    Py_VISIT(self->negators);
    Py_VISIT(self->stem_ids);
    Py_VISIT(self->fallback);
    Py_VISIT(self->unescape);
    return 0;
}

static int Scorer_clear(Scorer *self)
{
    Py_CLEAR(self->stems);
    Py_CLEAR(self->valences);
    Py_CLEAR(self->negators);
    Py_CLEAR(self->stem_ids);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->unescape);
    return 0;
}

static void Scorer_dealloc(Scorer *self)
{
    PyObject_GC_UnTrack(self);
    Scorer_clear(self);
    tokens_clear(self);
    PyMem_Free(self->tokens);
    PyMem_Free(self->word_pulls);
    PyMem_Free(self->negated_pulls);
    PyMem_Free(self->pair_pulls);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Scorer_methods[] = {
    {"scores", (PyCFunction)Scorer_scores, METH_O,
     "Return the probability of Positive for each tweet, as model.Model.scores does."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScorerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sentiment_core.Scorer",
    .tp_doc = "The model's scorer for ASCII tweets; the rest go to its fallback.",
    .tp_basicsize = sizeof(Scorer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scorer_init,
    .tp_dealloc = (destructor)Scorer_dealloc,
    .tp_traverse = (traverseproc)Scorer_traverse,
    .tp_clear = (inquiry)Scorer_clear,
    .tp_methods = Scorer_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sentiment_core",
    "The sentiment model's scorer in C (see model.py; the pure-Python scorer is the reference).",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_sentiment_core(void)
{
    PyObject *m;
    if (PyType_Ready(&ScorerType) < 0) return NULL;
    m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ScorerType);
    if (PyModule_AddObject(m, "Scorer", (PyObject *)&ScorerType) < 0) {
        Py_DECREF(&ScorerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
