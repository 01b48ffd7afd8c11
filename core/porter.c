/* NLTK's Porter stemmer, PorterStemmer(PorterStemmer.NLTK_EXTENSIONS).stem(word), for words of
 * ASCII characters that are already lower case (as the tokens model.py stems are).
 *
 * Each step follows nltk/stem/porter.py (nltk 3.10.4) rule for rule, in its order; the comments
 * name its methods. tests/test_core.py checks this against NLTK on every word of the data set, the
 * lexicon, every suffix of every rule after many stems, and random strings.
 */
#include <string.h>

#include "porter.h"

static int vowel(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

/* _is_consonant: not a, e, i, o or u; a 'y' is a consonant at the start or after a vowel. */
static int cons(const char *b, long i)
{
    if (vowel(b[i])) return 0;
    if (b[i] != 'y') return 1;
    int flip = 0;  /* a run of 'y's alternates, as NLTK resolves it, without recursion */
    while (i > 0 && b[i] == 'y') { flip = !flip; i--; }
    return (!vowel(b[i])) != flip;
}

/* The consonant flag of b[i] from that of b[i - 1], in one pass (_consonant_flags). */
static int next_flag(const char *b, long i, int previous)
{
    if (vowel(b[i])) return 0;
    return b[i] != 'y' || i == 0 || !previous;
}

/* _measure: the number of vowel-consonant sequences "vc" in b[0..k). */
static int measure(const char *b, long k)
{
    int m = 0, c = 1;
    for (long i = 0; i < k; i++) {
        int previous = c;
        c = next_flag(b, i, previous);
        if (c && !previous) m++;
    }
    return m;
}

static int contains_vowel(const char *b, long k)
{
    int c = 1;
    for (long i = 0; i < k; i++)
        if (!(c = next_flag(b, i, c))) return 1;
    return 0;
}

static int ends_double_consonant(const char *b, long k)
{
    return k >= 2 && b[k - 1] == b[k - 2] && cons(b, k - 1);
}

/* _ends_cvc, with NLTK's extension for two-letter stems. */
static int ends_cvc(const char *b, long k)
{
    return (k >= 3 && cons(b, k - 3) && !cons(b, k - 2) && cons(b, k - 1) &&
            b[k - 1] != 'w' && b[k - 1] != 'x' && b[k - 1] != 'y') ||
           (k == 2 && !cons(b, 0) && cons(b, 1));
}

static int ends(const char *b, long k, const char *suffix)
{
    long n = (long)strlen(suffix);
    return k >= n && memcmp(b + k - n, suffix, n) == 0;
}

/* Replace the last `cut` characters of b[0..k) by `with`; return the new length. */
static long replace(char *b, long k, long cut, const char *with)
{
    long n = (long)strlen(with);
    memcpy(b + k - cut, with, n);
    return k - cut + n;
}

/* A rule of _apply_rule_list: a suffix, its replacement, and the condition on the stem. */
enum condition { ALWAYS, M_ABOVE_0, M_ABOVE_1, ION, LOGI };
typedef struct {
    const char *suffix, *replacement;
    enum condition condition;
} Rule;

static int holds(enum condition condition, const char *b, long k, long stem)
{
    switch (condition) {
    case ALWAYS: return 1;
    case M_ABOVE_0: return measure(b, stem) > 0;
    case M_ABOVE_1: return measure(b, stem) > 1;
    case ION: return measure(b, stem) > 1 && (b[stem - 1] == 's' || b[stem - 1] == 't');
    case LOGI: return measure(b, k - 3) > 0;  /* "logi": the 'l' counts with the stem */
    }
    return 0;
}

/* _apply_rule_list: the first rule whose suffix the word ends with decides, whether or not its
 * condition holds. */
static long apply(char *b, long k, const Rule *rules, int count)
{
    for (int r = 0; r < count; r++) {
        long n = (long)strlen(rules[r].suffix);
        if (ends(b, k, rules[r].suffix))
            return holds(rules[r].condition, b, k, k - n) ? replace(b, k, n, rules[r].replacement)
                                                           : k;
    }
    return k;
}

static long step1a(char *b, long k)
{
    static const Rule rules[] = {
        {"sses", "ss", ALWAYS}, {"ies", "i", ALWAYS}, {"ss", "ss", ALWAYS}, {"s", "", ALWAYS},
    };
    if (k == 4 && ends(b, k, "ies")) return replace(b, k, 3, "ie");
    return apply(b, k, rules, 4);
}

static long step1b(char *b, long k)
{
    long stem;
    if (ends(b, k, "ied")) return replace(b, k, 3, k == 4 ? "ie" : "i");
    if (ends(b, k, "eed")) return measure(b, k - 3) > 0 ? replace(b, k, 3, "ee") : k;
    if (ends(b, k, "ed") && contains_vowel(b, k - 2))
        stem = k - 2;
    else if (ends(b, k, "ing") && contains_vowel(b, k - 3))
        stem = k - 3;
    else
        return k;
    /* The rules of _step1b, on the stem without "ed" or "ing". */
    if (ends(b, stem, "at")) return replace(b, stem, 2, "ate");
    if (ends(b, stem, "bl")) return replace(b, stem, 2, "ble");
    if (ends(b, stem, "iz")) return replace(b, stem, 2, "ize");
    if (ends_double_consonant(b, stem) || ends(b, stem, "*d")) {  /* NLTK matches "*d" as text */
        char last = b[stem - 1];
        if (last == 'l' || last == 's' || last == 'z') return stem;
        b[stem - 2] = last;  /* the stem without its last two letters, then its last one */
        return stem - 1;
    }
    if (measure(b, stem) == 1 && ends_cvc(b, stem)) return replace(b, stem, 0, "e");
    return stem;
}

static long step1c(char *b, long k)
{
    if (ends(b, k, "y") && k - 1 > 1 && cons(b, k - 2)) return replace(b, k, 1, "i");
    return k;
}

static long step2(char *b, long k)
{
    static const Rule rules[] = {
        {"ational", "ate", M_ABOVE_0}, {"tional", "tion", M_ABOVE_0},
        {"enci", "ence", M_ABOVE_0},   {"anci", "ance", M_ABOVE_0},
        {"izer", "ize", M_ABOVE_0},    {"bli", "ble", M_ABOVE_0},
        {"alli", "al", M_ABOVE_0},     {"entli", "ent", M_ABOVE_0},
        {"eli", "e", M_ABOVE_0},       {"ousli", "ous", M_ABOVE_0},
        {"ization", "ize", M_ABOVE_0}, {"ation", "ate", M_ABOVE_0},
        {"ator", "ate", M_ABOVE_0},    {"alism", "al", M_ABOVE_0},
        {"iveness", "ive", M_ABOVE_0}, {"fulness", "ful", M_ABOVE_0},
        {"ousness", "ous", M_ABOVE_0}, {"aliti", "al", M_ABOVE_0},
        {"iviti", "ive", M_ABOVE_0},   {"biliti", "ble", M_ABOVE_0},
        {"fulli", "ful", M_ABOVE_0},   {"logi", "log", LOGI},
    };
    /* NLTK applies ALLI -> AL first, and then step 2 again. */
    if (ends(b, k, "alli") && measure(b, k - 4) > 0) return step2(b, replace(b, k, 4, "al"));
    return apply(b, k, rules, sizeof rules / sizeof *rules);
}

static long step3(char *b, long k)
{
    static const Rule rules[] = {
        {"icate", "ic", M_ABOVE_0}, {"ative", "", M_ABOVE_0}, {"alize", "al", M_ABOVE_0},
        {"iciti", "ic", M_ABOVE_0}, {"ical", "ic", M_ABOVE_0}, {"ful", "", M_ABOVE_0},
        {"ness", "", M_ABOVE_0},
    };
    return apply(b, k, rules, sizeof rules / sizeof *rules);
}

static long step4(char *b, long k)
{
    static const Rule rules[] = {
        {"al", "", M_ABOVE_1},    {"ance", "", M_ABOVE_1}, {"ence", "", M_ABOVE_1},
        {"er", "", M_ABOVE_1},    {"ic", "", M_ABOVE_1},   {"able", "", M_ABOVE_1},
        {"ible", "", M_ABOVE_1},  {"ant", "", M_ABOVE_1},  {"ement", "", M_ABOVE_1},
        {"ment", "", M_ABOVE_1},  {"ent", "", M_ABOVE_1},  {"ion", "", ION},
        {"ou", "", M_ABOVE_1},    {"ism", "", M_ABOVE_1},  {"ate", "", M_ABOVE_1},
        {"iti", "", M_ABOVE_1},   {"ous", "", M_ABOVE_1},  {"ive", "", M_ABOVE_1},
        {"ize", "", M_ABOVE_1},
    };
    return apply(b, k, rules, sizeof rules / sizeof *rules);
}

static long step5a(char *b, long k)
{
    if (ends(b, k, "e")) {
        int m = measure(b, k - 1);
        if (m > 1 || (m == 1 && !ends_cvc(b, k - 1))) return k - 1;
    }
    return k;
}

static long step5b(char *b, long k)
{
    return ends(b, k, "ll") && measure(b, k - 1) > 1 ? k - 1 : k;
}

/* NLTK's table of irregular forms. */
static const char *const POOL[][2] = {
    {"sky", "sky"},         {"skies", "sky"},     {"dying", "die"},      {"lying", "lie"},
    {"tying", "tie"},       {"news", "news"},     {"innings", "inning"}, {"inning", "inning"},
    {"outings", "outing"},  {"outing", "outing"}, {"cannings", "canning"},
    {"canning", "canning"}, {"howe", "howe"},     {"proceed", "proceed"},
    {"exceed", "exceed"},   {"succeed", "succeed"},
};

long porter_stem(char *b, long k)
{
    for (unsigned i = 0; i < sizeof POOL / sizeof *POOL; i++)
        if ((long)strlen(POOL[i][0]) == k && memcmp(b, POOL[i][0], k) == 0)
            return replace(b, k, k, POOL[i][1]);
    if (k <= 2) return k;
    k = step1a(b, k);
    k = step1b(b, k);
    k = step1c(b, k);
    k = step2(b, k);
    k = step3(b, k);
    k = step4(b, k);
    k = step5a(b, k);
    return step5b(b, k);
}
