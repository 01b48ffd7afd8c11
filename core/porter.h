/* NLTK's Porter stemmer (NLTK_EXTENSIONS mode) for lower-case ASCII words: see porter.c. */
#ifndef PORTER_H
#define PORTER_H

/* Stem b[0..k) in place and return the stem's length; b must have room for k + 1 characters. */
long porter_stem(char *b, long k);

#endif
