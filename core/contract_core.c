/* Helpers of contract.py in C.
 *
 * unescaped_quotes: the quotes of JSON text that no backslash escapes. contract.checked_batch
 * parses a body with msgspec, whose dict keeps the last of a repeated id; a JSON object of strings
 * has 4 such quotes a member, so counting them tells whether an id was repeated. contract.members
 * does the same in Python (bytes.count and a pattern), the reference: tests/test_contract.py
 * checks that both agree. Here it takes 2 µs for a 1,000-tweet body, there 30 to 50.
 *
 * scan and write_labels: a predict body's tweets read, and its answer {id: label} written, with
 * the ids left where they are in the body. scan takes only the bodies whose answer it can write as
 * json.dumps(..., separators=(",", ":")) writes it: an object of 1 to max_tweets members, each id
 * printable ASCII with no quote or backslash (written back as it is) and seen once, each tweet a
 * string of at most max_tweet_chars characters that is valid UTF-8 with valid escapes; for any
 * other it returns None, and contract.py reads the body the way it always has (msgspec, then json,
 * which name what is wrong). tests/test_contract.py compares both ways' answers, byte for byte.
 * With in_place, a tweet of ASCII with no escape, most of them, is not copied into a str: texts
 * holds None for it, and the model's core reads it in the body (sentiment_core's scores_in).
 *
 * scan_strings and scan_elements: the V2 door's tweets read the same way, from the JSON array of
 * an input's "data" or from the binary tensor form (v2/rest.py's hot path). rounded and
 * write_floats: scores rounded as round() rounds them and written as json writes them, each about
 * ten times as fast (tests/test_contract.py holds both to Python's on millions of values).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Counted a block of 255 bytes at a time into one byte, a loop compilers make vector code of. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("O3")))
#endif
static Py_ssize_t count_quotes(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t count = 0, i = 0;
    while (i < n) {
        Py_ssize_t stop = n - i < 255 ? n : i + 255;
        unsigned char block = 0;
        for (; i < stop; i++) block += s[i] == '"';
        count += block;
    }
    return count;
}

static PyObject *unescaped_quotes(PyObject *Py_UNUSED(module), PyObject *text)
{
    Py_buffer view;
    if (PyObject_GetBuffer(text, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *s = view.buf, *end = s + view.len, *p = s;
    Py_ssize_t quotes = count_quotes(s, view.len);
    /* In valid JSON a backslash is in a string only, where it starts an escape of the character
     * after it (\uXXXX's hex digits are no backslashes): read from the left, each backslash found
     * starts one, and an escaped quote is a quote of the string's, not one that ends it. */
    while (p < end && (p = memchr(p, '\\', end - p)) != NULL) {
        if (end - p < 2) break;
        if (p[1] == '"') quotes--;
        p += 2;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(quotes);
}


/* ---- scan and write_labels ---- */

static inline const unsigned char *skip_space(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

static int hex4(const unsigned char *p, unsigned int *out)
{
    unsigned int value = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        value <<= 4;
        if (c >= '0' && c <= '9') value |= c - '0';
        else if (c >= 'a' && c <= 'f') value |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') value |= c - 'A' + 10;
        else return 0;
    }
    *out = value;
    return 1;
}

/* A JSON string's text (between its quotes, escapes in it) as UTF-8 in out, which has room for
 * n bytes (never more are needed); its length, or -1 for an escape that is not valid JSON or is a
 * lone surrogate (contract.py names that one). */
static Py_ssize_t unescape(const unsigned char *s, Py_ssize_t n, unsigned char *out)
{
    const unsigned char *end = s + n;
    unsigned char *o = out;
    while (s < end) {
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        if (end - s < 2) return -1;
        unsigned char c = s[1];
        s += 2;
        switch (c) {
        case '"': case '\\': case '/': *o++ = c; continue;
        case 'b': *o++ = '\b'; continue;
        case 'f': *o++ = '\f'; continue;
        case 'n': *o++ = '\n'; continue;
        case 'r': *o++ = '\r'; continue;
        case 't': *o++ = '\t'; continue;
        case 'u': break;
        default: return -1;
        }
        unsigned int code, low;
        if (end - s < 4 || !hex4(s, &code)) return -1;
        s += 4;
        if (code >= 0xDC00 && code <= 0xDFFF) return -1;
        if (code >= 0xD800 && code <= 0xDBFF) {
            if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || !hex4(s + 2, &low) ||
                low < 0xDC00 || low > 0xDFFF)
                return -1;
            s += 6;
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
        }
        if (code < 0x80) {
            *o++ = (unsigned char)code;
        } else if (code < 0x800) {
            *o++ = 0xC0 | (code >> 6);
            *o++ = 0x80 | (code & 0x3F);
        } else if (code < 0x10000) {
            *o++ = 0xE0 | (code >> 12);
            *o++ = 0x80 | ((code >> 6) & 0x3F);
            *o++ = 0x80 | (code & 0x3F);
        } else {
            *o++ = 0xF0 | (code >> 18);
            *o++ = 0x80 | ((code >> 12) & 0x3F);
            *o++ = 0x80 | ((code >> 6) & 0x3F);
            *o++ = 0x80 | (code & 0x3F);
        }
    }
    return o - out;
}

/* A tweet's string as a str, or NULL with no error set if contract.py must read it. */
static PyObject *tweet_text(const unsigned char *s, Py_ssize_t n, int escaped, int ascii,
                            Py_ssize_t most, unsigned char **buffer, Py_ssize_t room)
{
    PyObject *text;
    if (ascii) { /* most tweets (string_end: no escape either): copied as they are */
        if (n > most) return NULL;
        text = PyUnicode_New(n, 127);
        if (text != NULL) memcpy(PyUnicode_1BYTE_DATA(text), s, n);
        return text;
    }
    if (escaped) {
        if (*buffer == NULL && (*buffer = PyMem_Malloc(room)) == NULL) return PyErr_NoMemory();
        Py_ssize_t length = unescape(s, n, *buffer);
        if (length < 0) return NULL;
        text = PyUnicode_DecodeUTF8((const char *)*buffer, length, "strict");
    } else {
        text = PyUnicode_DecodeUTF8((const char *)s, n, "strict");
    }
    if (text == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(text) > most) {
        Py_DECREF(text);
        return NULL;
    }
    return text;
}

/* The quote that ends a string's text starting at p, or NULL if it is not valid JSON there (a
 * control character, no end); whether the text holds escapes and whether it is all ASCII. Where
 * SSE2 is (every x86-64), sixteen bytes are looked at a time. */
static const unsigned char *string_end(const unsigned char *p, const unsigned char *end,
                                       int *escaped, int *ascii)
{
    unsigned int high = 0;
    *escaped = 0;
    for (;;) {
#ifdef __SSE2__
        const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                      control = _mm_set1_epi8(0x1F);
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            __m128i hits = _mm_or_si128(
                _mm_cmpeq_epi8(_mm_max_epu8(v, control), control), /* below 0x20 */
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
            unsigned int found = (unsigned int)_mm_movemask_epi8(hits);
            unsigned int top = (unsigned int)_mm_movemask_epi8(v); /* bytes of 0x80 and over */
            if (found) {
                unsigned int before = (unsigned int)__builtin_ctz(found);
                high |= top & ((1u << before) - 1);
                p += before;
                break;
            }
            high |= top;
            p += 16;
        }
#endif
        if (p == end) return NULL;
        unsigned char c = *p;
        if (c == '"') break;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            *escaped = 1;
            if (end - p < 2) return NULL;
            p += 2; /* the escaped character, a quote maybe */
            continue;
        }
        high |= c >> 7;
        p++;
    }
    *ascii = high == 0 && !*escaped;
    return p;
}

static uint64_t id_hash(const unsigned char *s, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

/* 1 if an id (spans[2 * i], spans[2 * i + 1]) is repeated, 0 if not, -1 out of memory. */
static int repeated(const unsigned char *data, const Py_ssize_t *spans, Py_ssize_t count)
{
    size_t size = 16;
    while (size < (size_t)count * 2) size <<= 1;
    Py_ssize_t *table = PyMem_Malloc(size * sizeof(Py_ssize_t));
    if (table == NULL) return -1;
    memset(table, 0xFF, size * sizeof(Py_ssize_t)); /* -1: empty */
    int found = 0;
    for (Py_ssize_t i = 0; i < count && !found; i++) {
        const unsigned char *id = data + spans[2 * i];
        Py_ssize_t n = spans[2 * i + 1];
        size_t slot = id_hash(id, n) & (size - 1);
        for (; table[slot] >= 0; slot = (slot + 1) & (size - 1)) {
            Py_ssize_t j = table[slot];
            if (spans[2 * j + 1] == n && memcmp(data + spans[2 * j], id, n) == 0) {
                found = 1;
                break;
            }
        }
        table[slot] = i;
    }
    PyMem_Free(table);
    return found;
}

/* A batch's texts as they are read: each a str, or NULL for one left in place, None in the list
 * made of them at the end (texts_list), which raises None's reference count once: raised and
 * lowered for each tweet, it was a chain of 3,000 writes to one place, each waiting for the one
 * before (4 µs of a 1,000-tweet body). */
typedef struct {
    PyObject **items;
    Py_ssize_t count, capacity;
} Texts;

/* Add a text (its reference taken; NULL: left in place): 0, or -1 out of memory (an error set). */
static int texts_add(Texts *texts, PyObject *text)
{
    if (texts->count == texts->capacity) {
        Py_ssize_t capacity = texts->capacity ? 2 * texts->capacity : 64;
        PyObject **grown = PyMem_Realloc(texts->items, capacity * sizeof(PyObject *));
        if (grown == NULL) {
            Py_XDECREF(text);
            PyErr_NoMemory();
            return -1;
        }
        texts->items = grown, texts->capacity = capacity;
    }
    texts->items[texts->count++] = text;
    return 0;
}

/* The texts as a list, None for each left in place; the texts are the list's then. */
static PyObject *texts_list(Texts *texts)
{
    PyObject *list = PyList_New(texts->count);
    if (list == NULL) return NULL;
    Py_ssize_t nones = 0;
    for (Py_ssize_t i = 0; i < texts->count; i++) {
        PyObject *text = texts->items[i];
        nones += text == NULL;
        PyList_SET_ITEM(list, i, text == NULL ? Py_None : text);
    }
#ifdef Py_REF_DEBUG
    for (Py_ssize_t i = 0; i < nones; i++) Py_INCREF(Py_None);
#else
    Py_SET_REFCNT(Py_None, Py_REFCNT(Py_None) + nones); /* the list's references to None */
#endif
    texts->count = 0;
    return list;
}

static void texts_free(Texts *texts)
{
    for (Py_ssize_t i = 0; i < texts->count; i++) Py_XDECREF(texts->items[i]);
    PyMem_Free(texts->items);
}

/* Read the JSON string at *p (after spaces) as a tweet: its start and length in data into
 * place[0] and place[1], its text (or NULL, in place) added to texts, *p moved past its end
 * quote. 1 if read, 0 if it is not one scan takes (no error set), -1 on an error. */
static int read_tweet(const unsigned char **at, const unsigned char *data,
                      const unsigned char *end, Py_ssize_t *place, Py_ssize_t most_chars,
                      int in_place, unsigned char **buffer, Py_ssize_t room, Texts *texts)
{
    const unsigned char *p = skip_space(*at, end);
    if (p == end || *p++ != '"') return 0;
    const unsigned char *tweet = p;
    int escaped, ascii;
    if ((p = string_end(p, end, &escaped, &ascii)) == NULL) return 0;
    place[0] = tweet - data;
    place[1] = p - tweet;
    PyObject *text = NULL;
    if (in_place && ascii) { /* as it is in the body: read there by the model's core */
        if (p - tweet > most_chars) return 0;
    } else if ((text = tweet_text(tweet, p - tweet, escaped, ascii, most_chars, buffer, room)) ==
               NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (texts_add(texts, text) < 0) return -1;
    *at = p + 1;
    return 1;
}

/* After an array's or object's item: past a comma, 1 (another item follows); past the closing
 * character, 0 (the last); -1 for anything else. */
static int after_item(const unsigned char **at, const unsigned char *end, unsigned char close)
{
    const unsigned char *p = skip_space(*at, end);
    if (p == end || (*p != ',' && *p != close)) return -1;
    *at = p + 1;
    return *p == ',';
}

/* Room for one more span (a start and a length) in *spans of *capacity: 0, or -1 out of memory. */
static int room_for_one(Py_ssize_t **spans, Py_ssize_t *capacity, Py_ssize_t count)
{
    if (count < *capacity) return 0;
    Py_ssize_t *grown = PyMem_Realloc(*spans, *capacity * 4 * sizeof(Py_ssize_t));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *spans = grown;
    *capacity *= 2;
    return 0;
}

/* (spans, texts) as a tuple: the spans packed as bytes, the texts a list. */
static PyObject *spans_and_texts(const Py_ssize_t *spans, Py_ssize_t count, Texts *texts)
{
    PyObject *packed = PyBytes_FromStringAndSize((const char *)spans,
                                                 count * 2 * sizeof(Py_ssize_t));
    PyObject *list = packed == NULL ? NULL : texts_list(texts);
    PyObject *result = list == NULL ? NULL : PyTuple_Pack(2, packed, list);
    Py_XDECREF(packed);
    Py_XDECREF(list);
    return result;
}

/* The quotes of data[from:] and which of its 64-byte blocks hold a byte a string's text cannot
 * hold as it is (a backslash, a control character, 0x80 and over), in one pass that the branch
 * predictor learns at once; scan_strings then steps from quote to quote, and reads a string byte
 * by byte (string_end) only where one of its blocks holds such a byte. A request's strings end
 * where the predictor cannot guess, string after string: this is what it costs it (1,000 tweets
 * after a model call, as in a request: 25 to 13 µs). */
typedef struct {
    Py_ssize_t *at;    /* each quote's offset in data, in order */
    Py_ssize_t count;  /* how many */
    uint32_t *held;    /* held[b]: how many blocks before block b (data[from + 64 b:]) hold one */
    Py_ssize_t from;
} Quotes;

static inline int bits_set(uint64_t m) /* without the popcnt instruction x86-64 may not have */
{
    m = m - ((m >> 1) & 0x5555555555555555ULL);
    m = (m & 0x3333333333333333ULL) + ((m >> 2) & 0x3333333333333333ULL);
    m = (m + (m >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (int)((m * 0x0101010101010101ULL) >> 56);
}

/* A 64-byte block's quotes (bit i: byte i) and whether it holds such a byte (nonzero). */
static inline uint64_t block_bits(const unsigned char *p, uint64_t *special)
{
    uint64_t quotes = 0, odd = 0;
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                  control = _mm_set1_epi8(0x1F);
    __m128i any = _mm_setzero_si128(); /* a byte's top bit: 0x80 and over, or a match */
    for (int i = 0; i < 4; i++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + 16 * i));
        quotes |= (uint64_t)(unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) << (16 * i);
        any = _mm_or_si128(any, _mm_or_si128(v, _mm_cmpeq_epi8(v, backslash)));
        any = _mm_or_si128(any, _mm_cmpeq_epi8(_mm_max_epu8(v, control), control));
    }
    odd = (unsigned int)_mm_movemask_epi8(any);
#else
    for (int i = 0; i < 64; i++) {
        quotes |= (uint64_t)(p[i] == '"') << i;
        odd |= p[i] == '\\' || p[i] < 0x20 || p[i] >= 0x80;
    }
#endif
    *special = odd;
    return quotes;
}

/* Fill q for data[from:n]: 0, or -1 out of memory (an error set). */
static int index_quotes(const unsigned char *data, Py_ssize_t from, Py_ssize_t n, Quotes *q)
{
    Py_ssize_t blocks = (n - from + 63) / 64, capacity = (n - from) / 16 + 64;
    q->at = PyMem_Malloc(capacity * sizeof(Py_ssize_t));
    q->held = PyMem_Malloc((blocks + 1) * sizeof(uint32_t));
    q->count = 0, q->from = from;
    if (q->at == NULL || q->held == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    q->held[0] = 0;
    for (Py_ssize_t b = 0; b < blocks; b++) {
        Py_ssize_t base = from + 64 * b;
        unsigned char last[64];
        const unsigned char *p = data + base;
        if (n - base < 64) { /* the last block, filled out with spaces */
            memset(last, ' ', 64);
            memcpy(last, p, n - base);
            p = last;
        }
        uint64_t special, m = block_bits(p, &special);
        q->held[b + 1] = q->held[b] + (special != 0);
        if (q->count + 64 > capacity) { /* more quotes than a tweet's worth: rare */
            Py_ssize_t *grown = PyMem_Realloc(q->at, 2 * capacity * sizeof(Py_ssize_t));
            if (grown == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            q->at = grown, capacity *= 2;
        }
        Py_ssize_t *out = q->at + q->count;
        int found = bits_set(m);
        for (int i = 0; i < 4; i++) { /* four, found or not: no branch to guess (63: none) */
            out[i] = base + __builtin_ctzll(m | 0x8000000000000000ULL);
            m &= m - 1;
        }
        for (int i = 4; i < found; i++) { /* a fifth and more: rare */
            out[i] = base + __builtin_ctzll(m);
            m &= m - 1;
        }
        q->count += found;
    }
    return 0;
}

/* scan_strings(data, max_tweet_chars, max_tweets, in_place[, start]): a JSON array of 1 to
 * max_tweets strings, each a tweet as scan takes them (the V2 door's "data"), as (spans, texts):
 * each string's start and length in data, packed, and its text (None for one left in place).
 * None for any other array (nested, empty, a string that is no tweet scan takes, too many).
 * data is the array alone; or, given start, the array is data's from start on, whatever follows
 * it, and the answer is (spans, texts, end): end the offset just past its closing bracket. */
static PyObject *scan_strings(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t most_chars, most_tweets, count = 0, capacity = 64, start = -1;
    int in_place;
    if (!PyArg_ParseTuple(args, "y*nnp|n", &view, &most_chars, &most_tweets, &in_place, &start))
        return NULL;
    const unsigned char *data = view.buf, *end = data + view.len, *p;
    Py_ssize_t *spans = PyMem_Malloc(capacity * 2 * sizeof(Py_ssize_t)), next = 0;
    unsigned char *buffer = NULL;
    PyObject *result = NULL;
    Texts texts = {NULL, 0, 0};
    Quotes quotes = {NULL, 0, NULL, 0};
    if (spans == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    p = skip_space(start < 0 ? data : start < view.len ? data + start : end, end);
    if (p == end || *p++ != '[') goto none;
    if (index_quotes(data, p - data, view.len, &quotes) < 0) goto done;
    for (;;) {
        if (count == most_tweets) goto none;
        if (room_for_one(&spans, &capacity, count) < 0) goto done;
        p = skip_space(p, end);
        /* The next two quotes, where the string between them holds nothing to look at. */
        Py_ssize_t open = next < quotes.count ? quotes.at[next] : -1,
                   close = next + 1 < quotes.count ? quotes.at[next + 1] : -1,
                   first = (open + 1 - quotes.from) / 64, after = (close + 63 - quotes.from) / 64;
        int read;
        if (open == p - data && close > open &&
            quotes.held[after] == quotes.held[first]) {
            Py_ssize_t n = close - open - 1, *place = spans + 2 * count;
            place[0] = open + 1, place[1] = n;
            PyObject *text = NULL; /* in place */
            if (n > most_chars) goto none;
            if (!in_place && (text = tweet_text(data + open + 1, n, 0, 1, most_chars, NULL, 0)) ==
                                 NULL)
                goto done; /* out of memory */
            read = texts_add(&texts, text) < 0 ? -1 : 1;
            p = data + close + 1;
            next += 2;
        } else { /* escapes, or other than ASCII: byte by byte */
            read = read_tweet(&p, data, end, spans + 2 * count, most_chars, in_place, &buffer,
                              view.len, &texts);
            while (next < quotes.count && quotes.at[next] < p - data) next++;
        }
        if (read < 0) goto done;
        if (read == 0) goto none;
        count++;
        int more = after_item(&p, end, ']');
        if (more < 0) goto none;
        if (!more) break;
    }
    if (start >= 0) {
        PyObject *found = spans_and_texts(spans, count, &texts);
        result = found == NULL ? NULL : Py_BuildValue("(OOn)", PyTuple_GET_ITEM(found, 0),
                                                      PyTuple_GET_ITEM(found, 1), p - data);
        Py_XDECREF(found);
        goto done;
    }
    if (skip_space(p, end) != end) goto none;
    result = spans_and_texts(spans, count, &texts);
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(spans);
    PyMem_Free(buffer);
    PyMem_Free(quotes.at);
    PyMem_Free(quotes.held);
    texts_free(&texts);
    PyBuffer_Release(&view);
    return result;
}

/* Whether n bytes are all ASCII: eight at a time. */
static int all_ascii(const unsigned char *p, Py_ssize_t n)
{
    uint64_t high = 0, word;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&word, p + i, 8);
        high |= word;
    }
    for (; i < n; i++) high |= p[i];
    return (high & 0x8080808080808080ULL) == 0;
}

/* Which of data's 64-byte blocks hold a byte of 0x80 or over, as counts: held[b] is how many of
 * the blocks before block b do (held[0] is 0); NULL out of memory. One pass over data that the
 * branch predictor learns at once, where a check of each element's own bytes ends at a place
 * it cannot guess, element after element: 1,000 tweets 15 to 6 µs, the input new each time. */
static uint32_t *blocks_held(const unsigned char *data, Py_ssize_t n)
{
    Py_ssize_t blocks = (n + 63) / 64, b = 0;
    uint32_t *held = PyMem_Malloc((blocks + 1) * sizeof(uint32_t));
    if (held == NULL) return NULL;
    held[0] = 0;
    for (; b < n / 64; b++) {
        uint64_t words[8], high = 0;
        memcpy(words, data + 64 * b, 64);
        for (int i = 0; i < 8; i++) high |= words[i];
        held[b + 1] = held[b] + ((high & 0x8080808080808080ULL) != 0);
    }
    if (b < blocks) held[b + 1] = held[b] + !all_ascii(data + 64 * b, n - 64 * b);
    return held;
}

/* write_elements(texts): a list of str as a BYTES tensor's binary form, each a 4-byte
 * little-endian length and its UTF-8 (the V2 door's labels), as v2/protocol.py's Python does. */
static PyObject *write_elements(PyObject *Py_UNUSED(module), PyObject *texts)
{
    if (!PyList_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "texts must be a list");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(texts), size = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *text = PyList_GET_ITEM(texts, i);
        Py_ssize_t n;
        if (!PyUnicode_Check(text) || PyUnicode_AsUTF8AndSize(text, &n) == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "each text must be a str");
            return NULL;
        }
        if (n > 0xFFFFFFFFLL) {
            PyErr_SetString(PyExc_ValueError, "a text is over 4 GB");
            return NULL;
        }
        size += 4 + n;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(texts, i), &n); /* cached */
        o[0] = n & 0xFF, o[1] = (n >> 8) & 0xFF, o[2] = (n >> 16) & 0xFF, o[3] = (n >> 24) & 0xFF;
        memcpy(o + 4, utf8, n);
        o += 4 + n;
    }
    return result;
}

/* scan_elements(data, count, max_tweet_chars, in_place): a BYTES tensor in the Open Inference
 * Protocol's binary form (each element a 4-byte little-endian length and its bytes), exactly
 * count elements of valid UTF-8 of at most max_tweet_chars characters each, 1 or more, as
 * (spans, texts) as scan_strings gives them (None in texts for an ASCII element left in place).
 * None for any other (v2/protocol.py's split_bytes and texts_of_bytes name what is wrong). */
static PyObject *scan_elements(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t expected, most_chars, count = 0;
    int in_place;
    if (!PyArg_ParseTuple(args, "y*nnp", &view, &expected, &most_chars, &in_place)) return NULL;
    const unsigned char *data = view.buf, *end = data + view.len, *p = data;
    Py_ssize_t *spans = NULL;
    uint32_t *held = NULL;
    PyObject *result = NULL;
    Texts texts = {NULL, 0, 0};
    if (expected < 1 || expected > view.len / 4) goto none;
    spans = PyMem_Malloc(expected * 2 * sizeof(Py_ssize_t));
    texts.items = PyMem_Malloc(expected * sizeof(PyObject *));
    texts.capacity = expected;
    held = blocks_held(data, view.len);
    if (spans == NULL || texts.items == NULL || held == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; p < end; count++) {
        if (count == expected || end - p < 4) goto none;
        Py_ssize_t n = (Py_ssize_t)p[0] | (Py_ssize_t)p[1] << 8 | (Py_ssize_t)p[2] << 16 |
                       (Py_ssize_t)p[3] << 24;
        p += 4;
        if (n > end - p) goto none;
        Py_ssize_t at = p - data; /* no block it is in holds a byte over 0x7F, or look */
        int ascii = held[(at + n + 63) / 64] == held[at / 64] || all_ascii(p, n);
        spans[2 * count] = p - data;
        spans[2 * count + 1] = n;
        PyObject *text = NULL; /* read in the body by the model's core */
        if (in_place && ascii) {
            if (n > most_chars) goto none;
        } else if ((text = tweet_text(p, n, 0, ascii, most_chars, NULL, 0)) == NULL) {
            if (PyErr_Occurred()) goto done;
            goto none;
        }
        texts.items[texts.count++] = text; /* room for expected, and count < expected */
        p += n;
    }
    if (count != expected) goto none;
    result = spans_and_texts(spans, count, &texts);
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(spans);
    PyMem_Free(held);
    texts_free(&texts);
    PyBuffer_Release(&view);
    return result;
}

/* |x| rounded to a number of decimals as Python's round(x, decimals) rounds it, in units of
 * 10**-decimals (scale is 10**decimals): the decimal nearest x's exact value, half to even, whose
 * nearest double is round()'s answer (units / scale, x's sign). 0 if it cannot tell (|x| times
 * the scale past 2**52, or not finite), 1 when done. y, x * scale rounded, is within half an ulp
 * of the exact product, y + e (fma): only where y's fraction is that near one half need e say on
 * which side the exact value is. */
static int round_units(double x, double scale, double *units)
{
    double a = fabs(x), y = a * scale;
    if (!(y < 4503599627370496.0)) return 0; /* 2**52; NaN and infinities too */
    double f = (double)(long long)y, d = (y - f) - 0.5; /* f: floor(y), y - f exact */
    double up = (double)(d > 0.0); /* no branch on which: a score's is anyone's guess */
    if (fabs(d) <= y * 4.5e-16 && y != 0.0) { /* within an ulp of y, twice over, of one half: d
                                                * is exact (Sterbenz), and e decides */
        double e = fma(a, scale, -y);
        up = d > -e ? 1.0 : d < -e ? 0.0 : (double)((long long)f & 1); /* a tie: to even */
    }
    *units = f + up;
    return 1;
}

static int round_decimal(double x, double scale, double *out)
{
    double units;
    if (!round_units(x, scale, &units)) return 0;
    *out = copysign(units / scale, x);
    return 1;
}

/* rounded(values, decimals): [round(v, decimals) for v in values], ten times as fast. */
static PyObject *rounded(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *given, *values, *result;
    int decimals;
    if (!PyArg_ParseTuple(args, "Oi", &given, &decimals)) return NULL;
    if (decimals < 0 || decimals > 15) {
        PyErr_SetString(PyExc_ValueError, "decimals must be 0 to 15");
        return NULL;
    }
    double scale = 1.0;
    for (int i = 0; i < decimals; i++) scale *= 10.0; /* exact up to 1e22 */
    if ((values = PySequence_Fast(given, "values must be a sequence")) == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(values);
    if ((result = PyList_New(count)) == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(values, i), *item;
        double out;
        if (PyFloat_CheckExact(value) && round_decimal(PyFloat_AS_DOUBLE(value), scale, &out))
            item = PyFloat_FromDouble(out);
        else
            item = PyObject_CallMethod(value, "__round__", "i", decimals);
        if (item == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, item);
    }
done:
    Py_DECREF(values);
    return result;
}

/* A score to 6 decimals, k / 10**6, as float.__repr__ writes it: the decimal's digits (the
 * shortest that read back as the same double, there being no shorter), 0.000123 from 0.0001 up,
 * 1.5e-05 below. */
static char *write_micro(long k, char *o)
{
    if (k == 0 || k == 1000000) {
        memcpy(o, k ? "1.0" : "0.0", 3);
        return o + 3;
    }
    if (k < 100) { /* 1e-06 to 9.9e-05 */
        long first = k < 10 ? k : k / 10, second = k < 10 ? 0 : k % 10;
        *o++ = (char)('0' + first);
        if (second) {
            *o++ = '.';
            *o++ = (char)('0' + second);
        }
        memcpy(o, k < 10 ? "e-06" : "e-05", 4);
        return o + 4;
    }
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930"
                                "31323334353637383940414243444546474849505152535455565758596061"
                                "62636465666768697071727374757677787980818283848586878889909192"
                                "93949596979899";
    o[0] = '0';
    o[1] = '.';
    memcpy(o + 2, pairs + 2 * (k / 10000), 2); /* six digits, two at a time */
    memcpy(o + 4, pairs + 2 * (k / 100 % 100), 2);
    memcpy(o + 6, pairs + 2 * (k % 100), 2);
    int n = 8;
    while (o[n - 1] == '0') n--; /* not all: k is not 0 */
    return o + n;
}

/* A list's value as a double: with decimals (0 to 15), rounded as round(value, decimals) rounds
 * it, which must give a float; without (-1), a float as it is. 0, or -1 with an error set. */
static int float_of(PyObject *value, int decimals, double scale, double *out)
{
    if (decimals >= 0 && PyFloat_CheckExact(value) &&
        round_decimal(PyFloat_AS_DOUBLE(value), scale, out))
        return 0;
    PyObject *number = decimals >= 0 ? PyObject_CallMethod(value, "__round__", "i", decimals)
                                     : Py_NewRef(value);
    if (number == NULL) return -1;
    int is_float = PyFloat_CheckExact(number);
    if (is_float) *out = PyFloat_AS_DOUBLE(number);
    Py_DECREF(number);
    if (!is_float) PyErr_SetString(PyExc_TypeError, "each value must be a float");
    return is_float ? 0 : -1;
}

/* write_floats' and pack_floats' values: a list, or a buffer of doubles (the scores as the
 * model's core packs them: no float object was made for each). */
typedef struct {
    PyObject *list;
    Py_buffer view;
    Py_ssize_t count;
} Floats;

/* The arguments of write_floats and pack_floats: the values and decimals (None or absent: -1).
 * 0, or -1 with an error set and nothing held. */
static int floats_arguments(PyObject *args, Floats *values, int *decimals, double *scale)
{
    PyObject *given = Py_None, *object;
    if (!PyArg_ParseTuple(args, "O|O", &object, &given)) return -1;
    long number = given == Py_None ? -1 : PyLong_AsLong(given);
    if (number == -1 && PyErr_Occurred()) return -1;
    if (given != Py_None && (number < 0 || number > 15)) {
        PyErr_SetString(PyExc_ValueError, "decimals must be 0 to 15");
        return -1;
    }
    *decimals = (int)number;
    *scale = 1.0;
    for (int i = 0; i < *decimals; i++) *scale *= 10.0;
    values->list = PyList_Check(object) ? object : NULL;
    if (values->list != NULL) {
        values->count = PyList_GET_SIZE(object);
        return 0;
    }
    if (PyObject_GetBuffer(object, &values->view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (values->view.itemsize != sizeof(double) || strcmp(values->view.format, "d") != 0) {
        PyBuffer_Release(&values->view);
        PyErr_SetString(PyExc_TypeError, "values must be a list, or a buffer of doubles");
        return -1;
    }
    values->count = values->view.len / (Py_ssize_t)sizeof(double);
    return 0;
}

static void floats_release(Floats *values)
{
    if (values->list == NULL) PyBuffer_Release(&values->view);
}

/* The i-th value: *value NULL and its double in *x, where it is a float (or a double); else
 * *value the object, borrowed (float_of reads it). 0, or -1 with an error set if the list has
 * changed size. */
static int value_at(Floats *values, Py_ssize_t i, PyObject **value, double *x)
{
    *value = NULL;
    if (values->list == NULL) {
        *x = ((const double *)values->view.buf)[i];
        return 0;
    }
    if (i >= PyList_GET_SIZE(values->list)) {
        PyErr_SetString(PyExc_RuntimeError, "the list changed size");
        return -1;
    }
    PyObject *item = PyList_GET_ITEM(values->list, i);
    if (PyFloat_CheckExact(item))
        *x = PyFloat_AS_DOUBLE(item);
    else
        *value = item;
    return 0;
}

/* A value as value_at gives it, rounded as float_of rounds it: 0, or -1 with an error set. */
static int number_of(PyObject *value, double x, int decimals, double scale, double *out)
{
    if (value != NULL) return float_of(value, decimals, scale, out);
    if (decimals < 0) {
        *out = x;
        return 0;
    }
    if (round_decimal(x, scale, out)) return 0;
    PyObject *number = PyFloat_FromDouble(x); /* past what round_decimal can tell: round() */
    if (number == NULL) return -1;
    int done = float_of(number, decimals, scale, out);
    Py_DECREF(number);
    return done;
}

/* write_floats(values[, decimals]): a list of floats (or a buffer of doubles) as JSON, as
 * json.dumps(values, separators=(",", ":")) writes it (float.__repr__ each), each first rounded
 * as round(value, decimals) rounds it if decimals are given: the scores, k / 10**6, from k's
 * digits, ten times as fast. ValueError for a value that is not finite, TypeError for one that
 * is no float. */
static PyObject *write_floats(PyObject *Py_UNUSED(module), PyObject *args)
{
    Floats values;
    int decimals;
    double scale;
    if (floats_arguments(args, &values, &decimals, &scale) < 0) return NULL;
    Py_ssize_t count = values.count;
    PyObject *result = PyBytes_FromStringAndSize(NULL, count * 32 + 2); /* repr: 24 at most */
    if (result == NULL) goto failed;
    char *o = PyBytes_AS_STRING(result);
    *o++ = '[';
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value;
        double raw, x, units;
        if (value_at(&values, i, &value, &raw) < 0) goto failed;
        if (value == NULL && decimals == 6 && !signbit(raw) && round_units(raw, 1e6, &units) &&
            units <= 1e6) {
            if (i) *o++ = ',';
            o = write_micro((long)units, o); /* a score, rounded: k / 10**6 */
            continue;
        }
        if (number_of(value, raw, decimals, scale, &x) < 0) goto failed;
        if (!isfinite(x)) {
            PyErr_SetString(PyExc_ValueError, "a value is not finite: JSON has no such number");
            goto failed;
        }
        if (i) *o++ = ',';
        double k = nearbyint(x * 1e6);
        if (x >= 0 && x <= 1 && !signbit(x) && k / 1e6 == x) {
            o = write_micro((long)k, o);
            continue;
        }
        char *text = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL) goto failed;
        size_t n = strlen(text);
        memcpy(o, text, n);
        o += n;
        PyMem_Free(text);
    }
    *o++ = ']';
    floats_release(&values);
    if (_PyBytes_Resize(&result, o - PyBytes_AS_STRING(result)) < 0) return NULL;
    return result;
failed:
    floats_release(&values);
    Py_XDECREF(result);
    return NULL;
}

/* pack_floats(values[, decimals]): a list of floats (or a buffer of doubles) as FP32,
 * little-endian, as struct.pack("<%df" % len(values), *values) packs them, each first rounded
 * as write_floats rounds it if decimals are given. */
static PyObject *pack_floats(PyObject *Py_UNUSED(module), PyObject *args)
{
    Floats values;
    int decimals;
    double scale;
    if (floats_arguments(args, &values, &decimals, &scale) < 0) return NULL;
    Py_ssize_t count = values.count;
    PyObject *result = PyBytes_FromStringAndSize(NULL, count * 4);
    if (result == NULL) goto failed;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value;
        double raw, x;
        if (value_at(&values, i, &value, &raw) < 0) goto failed;
#if PY_LITTLE_ENDIAN
        if (value == NULL && decimals >= 0 && round_decimal(raw, scale, &x)) { /* no overflow */
            float y = (float)x; /* as PyFloat_Pack4 packs it, where floats are little-endian */
            memcpy(o + 4 * i, &y, 4);
            continue;
        }
#endif
        if (number_of(value, raw, decimals, scale, &x) < 0 ||
            PyFloat_Pack4(x, (char *)o + 4 * i, 1) < 0)
            goto failed;
    }
    floats_release(&values);
    return result;
failed:
    floats_release(&values);
    Py_XDECREF(result);
    return NULL;
}

static PyObject *scan(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t most_id, most_chars, most_tweets;
    int in_place;
    if (!PyArg_ParseTuple(args, "y*nnnp", &view, &most_id, &most_chars, &most_tweets, &in_place))
        return NULL;
    const unsigned char *data = view.buf, *end = data + view.len, *p;
    Py_ssize_t count = 0, capacity = 64;
    Py_ssize_t *spans = PyMem_Malloc(capacity * 2 * sizeof(Py_ssize_t)); /* the ids' */
    Py_ssize_t *places = PyMem_Malloc(capacity * 2 * sizeof(Py_ssize_t)); /* the tweets' */
    unsigned char *buffer = NULL; /* for escaped tweets, made at the first */
    PyObject *result = NULL;
    Texts texts = {NULL, 0, 0};
    if (spans == NULL || places == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    p = skip_space(data, end);
    if (p == end || *p++ != '{') goto none;
    for (;;) {
        /* "id" */
        p = skip_space(p, end);
        if (p == end || *p++ != '"') goto none;
        const unsigned char *id = p;
        while (p < end && *p != '"') {
            if (*p < 0x20 || *p > 0x7E || *p == '\\') goto none;
            p++;
        }
        if (p == end || p - id > most_id || count == most_tweets) goto none;
        if (count == capacity) {
            capacity *= 2;
            Py_ssize_t *grown = PyMem_Realloc(spans, capacity * 2 * sizeof(Py_ssize_t));
            if (grown != NULL) spans = grown;
            Py_ssize_t *more = grown ? PyMem_Realloc(places, capacity * 2 * sizeof(Py_ssize_t)) : NULL;
            if (more == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            places = more;
        }
        spans[2 * count] = id - data;
        spans[2 * count + 1] = p - id;
        p = skip_space(p + 1, end);
        if (p == end || *p++ != ':') goto none;
        /* "tweet" */
        int read = read_tweet(&p, data, end, places + 2 * count, most_chars, in_place, &buffer,
                              view.len, &texts);
        if (read < 0) goto done;
        if (read == 0) goto none;
        count++;
        int more = after_item(&p, end, '}');
        if (more < 0) goto none;
        if (!more) break;
    }
    if (skip_space(p, end) != end) goto none;
    int twice = repeated(data, spans, count);
    if (twice < 0) {
        PyErr_NoMemory();
        goto done;
    }
    if (twice) goto none;
    PyObject *ids = PyBytes_FromStringAndSize((const char *)spans,
                                              count * 2 * sizeof(Py_ssize_t));
    PyObject *tweets = PyBytes_FromStringAndSize((const char *)places,
                                                 count * 2 * sizeof(Py_ssize_t));
    PyObject *list = ids != NULL && tweets != NULL ? texts_list(&texts) : NULL;
    if (list != NULL) result = PyTuple_Pack(3, ids, tweets, list);
    Py_XDECREF(ids);
    Py_XDECREF(tweets);
    Py_XDECREF(list);
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(spans);
    PyMem_Free(places);
    PyMem_Free(buffer);
    texts_free(&texts);
    PyBuffer_Release(&view);
    return result;
}

/* {"id":"label",...} and a newline, the ids from the body where scan found them. */
static PyObject *write_labels(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view, packed;
    PyObject *labels, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*O!", &view, &packed, &PyList_Type, &labels)) return NULL;
    const Py_ssize_t *spans = packed.buf;
    Py_ssize_t count = packed.len / (Py_ssize_t)(2 * sizeof(Py_ssize_t)), size = 2;
    if (count == 0 || count != PyList_GET_SIZE(labels)) {
        PyErr_SetString(PyExc_ValueError, "as many labels as ids are needed");
        goto done;
    }
    PyObject *seen[2] = {NULL, NULL}; /* labels looked at: the model's two, mostly */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *label = PyList_GET_ITEM(labels, i);
        if (spans[2 * i] < 0 || spans[2 * i + 1] < 0 || spans[2 * i] > view.len - spans[2 * i + 1]) {
            PyErr_SetString(PyExc_ValueError, "an id outside the body");
            goto done;
        }
        if (label == seen[0] || label == seen[1]) {
            size += spans[2 * i + 1] + PyUnicode_GET_LENGTH(label) + 6;
            continue;
        }
        seen[1] = seen[0];
        seen[0] = label;
        if (!PyUnicode_Check(label) || !PyUnicode_IS_ASCII(label)) {
            PyErr_SetString(PyExc_ValueError, "a label must be an ASCII str");
            goto done;
        }
        const unsigned char *l = PyUnicode_1BYTE_DATA(label);
        for (Py_ssize_t j = 0; j < PyUnicode_GET_LENGTH(label); j++) {
            if (l[j] < 0x20 || l[j] > 0x7E || l[j] == '"' || l[j] == '\\') {
                PyErr_SetString(PyExc_ValueError, "a label must need no escape in JSON");
                goto done;
            }
        }
        size += spans[2 * i + 1] + PyUnicode_GET_LENGTH(label) + 6; /* "id":"label", */
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) goto done;
    char *o = PyBytes_AS_STRING(result);
    *o++ = '{';
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *label = PyList_GET_ITEM(labels, i);
        Py_ssize_t n = PyUnicode_GET_LENGTH(label);
        *o++ = '"';
        memcpy(o, (const char *)view.buf + spans[2 * i], spans[2 * i + 1]);
        o += spans[2 * i + 1];
        memcpy(o, "\":\"", 3);
        o += 3;
        memcpy(o, PyUnicode_1BYTE_DATA(label), n);
        o += n;
        *o++ = '"';
        *o++ = i + 1 < count ? ',' : '}';
    }
    *o++ = '\n';
done:
    PyBuffer_Release(&view);
    PyBuffer_Release(&packed);
    return result;
}

/* texts_of(data, spans, texts): texts with each None (a tweet left in place: ASCII with no
 * escape) replaced by the str of data's bytes at its span: what a model that reads no body is
 * given (contract.scanned_scores). */
static PyObject *texts_of(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer data, packed;
    PyObject *texts, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*O!", &data, &packed, &PyList_Type, &texts)) return NULL;
    const Py_ssize_t *spans = packed.buf;
    Py_ssize_t count = PyList_GET_SIZE(texts);
    if (packed.len != count * 2 * (Py_ssize_t)sizeof(Py_ssize_t)) {
        PyErr_SetString(PyExc_ValueError, "a start and a length are needed for each text");
        goto done;
    }
    if ((result = PyList_New(count)) == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *text = PyList_GET_ITEM(texts, i);
        Py_ssize_t start = spans[2 * i], n = spans[2 * i + 1];
        if (text != Py_None) {
            Py_INCREF(text);
        } else if (start < 0 || n < 0 || start > data.len - n ||
                   !all_ascii((const unsigned char *)data.buf + start, n)) {
            PyErr_SetString(PyExc_ValueError, "a text left in place is not ASCII in the data");
            Py_CLEAR(result);
            goto done;
        } else if ((text = PyUnicode_New(n, 127)) != NULL) {
            memcpy(PyUnicode_1BYTE_DATA(text), (const char *)data.buf + start, n);
        } else {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, text);
    }
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&packed);
    return result;
}

/* count_of(values, value): values.count(value) for a list, as fast as a label's count can be:
 * an item that is the value is counted at once, and a str found unequal is not compared again
 * (a batch's labels are two objects, one of which is not the value). */
static PyObject *count_of(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *values, *value, *unlike = NULL;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &values, &value)) return NULL;
    int is_str = PyUnicode_CheckExact(value);
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        PyObject *item = PyList_GET_ITEM(values, i);
        if (item == value) {
            count++;
            continue;
        }
        if (item == unlike) continue;
        int plain = is_str && PyUnicode_CheckExact(item); /* no Python code compares them */
        Py_INCREF(item); /* else an __eq__ may change the list, and free what unlike was */
        int equal = PyObject_RichCompareBool(item, value, Py_EQ);
        unlike = plain ? (equal == 0 ? item : unlike) : NULL; /* the list holds it */
        Py_DECREF(item);
        if (equal < 0) return NULL;
        count += equal;
    }
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"unescaped_quotes", unescaped_quotes, METH_O,
     "Return the quotes of valid JSON text (bytes) that no backslash escapes."},
    {"scan", scan, METH_VARARGS,
     "scan(body, max_id_chars, max_tweet_chars, max_tweets, in_place): (ids, tweets, texts)"
     " or None."},
    {"scan_strings", scan_strings, METH_VARARGS,
     "scan_strings(data, max_tweet_chars, max_tweets, in_place[, start]): (spans, texts[, end])"
     " or None."},
    {"scan_elements", scan_elements, METH_VARARGS,
     "scan_elements(data, count, max_tweet_chars, in_place): (spans, texts) or None."},
    {"rounded", rounded, METH_VARARGS,
     "rounded(values, decimals): [round(v, decimals) for v in values]."},
    {"write_floats", write_floats, METH_VARARGS,
     "write_floats(values[, decimals]): floats (a list, or a buffer of doubles), rounded, as"
     " JSON, as json writes them."},
    {"pack_floats", pack_floats, METH_VARARGS,
     "pack_floats(values[, decimals]): floats (a list, or a buffer of doubles), rounded, as"
     " FP32, little-endian."},
    {"write_elements", write_elements, METH_O,
     "write_elements(texts): a list of str as a BYTES tensor's binary form."},
    {"texts_of", texts_of, METH_VARARGS,
     "texts_of(data, spans, texts): texts, each None the str of data's ASCII at its span."},
    {"count_of", count_of, METH_VARARGS,
     "count_of(values, value): values.count(value) for a list, a label's count at once."},
    {"write_labels", write_labels, METH_VARARGS,
     "write_labels(body, ids, labels): the answer {id: label} as JSON bytes, a newline after."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "contract_core",
    "Helpers of contract.py in C (contract.py holds the reference of each).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_contract_core(void) { return PyModule_Create(&module); }
