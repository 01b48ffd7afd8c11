"""Train the sentiment model and write artifacts/: the model, its manifest, a model card and a plot.

    python train.py --data ../shared/data/tweet_sentiment_10K.csv

Hyper-parameters are chosen by cross-validation on the reference training rows only; the model
fitted on those rows is scored on the reference test rows, beside the 2020 approach trained on the
same rows; then the shipped model is fitted on all rows. Same data, same files, byte for byte.
"""

import argparse
import hashlib
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import sklearn
from nltk.stem.porter import PorterStemmer
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

import model

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from sklearn import metrics  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent / "shared" / "data" / "tweet_sentiment_10K.csv"
DEFAULT_NLTK_DATA = HERE.parent / "shared" / "nltk_data"
COLUMNS = ("id", "date", "text", "target")
TRAIN_FRACTION = 0.8  # per class, the first 80% of rows in file order: 4,000 of 5,000 here
MIN_COUNT = 2  # a term seen in one training tweet only is noise, and bloats the artifacts
GRID = {"nb__alpha": [0.5, 1.0], "lr__C": [0.1, 0.3, 1.0]}
CV = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
# Stored numbers are rounded to DECIMALS places so that retraining gives the same bytes on any
# machine. OpenBLAS (which L-BFGS calls) and NumPy (log, exp) pick SIMD kernels for the CPU they
# find at run time, and different kernels round differently: the same fit differed by up to
# 7e-13 between kernel sets here. A value closer than ROUNDING_MARGIN to a rounding boundary
# could round either way on another machine, so training refuses to write it (see rounded()).
DECIMALS = 4
ROUNDING_MARGIN = 1e-11
CARD_FILE = "MODEL_CARD.md"
PLOT_FILE = "evaluation.png"


class Analyzer:
    """Turn a tweet into terms with model.py's preprocessing, for CountVectorizer."""

    def __init__(self, name, settings):
        self.name, self.settings = name, settings
        self.preprocessor = model.Preprocessor(settings)

    def __call__(self, text):
        return sorted(self.preprocessor.terms(self.preprocessor.tokens(text)))

    def __repr__(self):
        return self.name


def rounded(values):
    """Round to DECIMALS places; return the values and each one's distance to a rounding boundary.

    The distance says how far a value is from rounding the other way: if it is within the noise
    that run-time kernel choice adds, another machine could store a different number.
    """
    scaled = np.asarray(values, dtype=float) * 10**DECIMALS
    distance = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) / 10**DECIMALS
    return np.round(scaled) / 10**DECIMALS + 0.0, distance  # + 0.0: no -0.0


class NBWeighting(TransformerMixin, BaseEstimator):
    """Scale each binary term feature by its smoothed log-count ratio, positive over negative.

    The ratios are rounded (see DECIMALS); ratio_margins_ keeps how near each came to rounding the
    other way.
    """

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y):
        y = np.asarray(y)
        self.positive_counts_ = np.asarray(X[y == 1].sum(axis=0)).ravel()
        self.negative_counts_ = np.asarray(X[y == 0].sum(axis=0)).ravel()
        p = self.alpha + self.positive_counts_
        q = self.alpha + self.negative_counts_
        self.ratios_, self.ratio_margins_ = rounded(np.log(p / p.sum()) - np.log(q / q.sum()))
        return self

    def transform(self, X):
        return X.multiply(self.ratios_).tocsr()


class RoundedLogisticRegression(LogisticRegression):
    """scikit-learn's logistic regression, its coefficients and intercept rounded after fitting."""

    def fit(self, X, y, sample_weight=None):
        super().fit(X, y, sample_weight)
        self.coef_, coef_margins = rounded(self.coef_)
        self.intercept_, intercept_margins = rounded(self.intercept_)
        self.margins_ = np.concatenate([coef_margins.ravel(), intercept_margins])
        return self


def check_rounding(fitted):
    """Stop unless every stored number is clear of a rounding boundary by ROUNDING_MARGIN."""
    vec, nb, lr = (fitted.named_steps[k] for k in ("vec", "nb", "lr"))
    names = [*vec.get_feature_names_out(), "(intercept)"]
    for kind, margins in (("log-count ratio", nb.ratio_margins_), ("coefficient", lr.margins_)):
        i = int(np.argmin(margins))
        if margins[i] < ROUNDING_MARGIN:
            sys.exit(
                f"the {kind} of {names[i]!r} lies {margins[i]:.1e} from a rounding boundary at "
                f"{DECIMALS} decimals, within the run-time noise of BLAS and NumPy kernels "
                f"({ROUNDING_MARGIN:g}): another machine could store a different number. Change "
                "DECIMALS in train.py (and say so in the model card)."
            )


def read_data(path):
    """Read the CSV and check its columns and targets."""
    df = pd.read_csv(path, dtype={"text": str}, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        sys.exit(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    if not df["target"].isin([0, 1]).all():
        sys.exit(f"{path}: target must be 0 (negative) or 1 (positive)")
    return df


def reference_split(df):
    """Split per class: the first 80% of each class's rows train, the rest test."""
    ranks = df.groupby("target").cumcount()
    sizes = df.groupby("target")["target"].transform("size")
    is_train = ranks < (sizes * TRAIN_FRACTION).round()
    return df[is_train], df[~is_train]


def nltk_stop_words():
    """Return NLTK's English stop words, read from NLTK_DATA (default ../shared/nltk_data)."""
    import nltk

    if "NLTK_DATA" not in os.environ:  # nltk read the variable on import; add our default
        nltk.data.path.append(str(DEFAULT_NLTK_DATA))
    try:
        return nltk.corpus.stopwords.words("english")
    except LookupError:
        sys.exit("NLTK's English stop words were not found: set NLTK_DATA to ../shared/nltk_data")


def stop_word_candidates(english):
    """Return the stop-word lists cross-validation chooses between, from NLTK's English list."""
    fold = str.maketrans("", "", "'\u2019")
    negations = {"no", "nor", "not", "ain"} | {w for w in english if w.endswith("n't")}
    negations |= {w[:-3] for w in negations if w.endswith("n't")}
    # Negations carry sentiment: "not good" is not "good".
    kept = sorted({w.lower().translate(fold) for w in english if w not in negations})
    return {"nltk-english-without-negations": kept, "none": []}


def pipeline():
    """Return the unfitted pipeline: terms, NB weighting, logistic regression."""
    return Pipeline(
        [
            ("vec", CountVectorizer(binary=True, min_df=MIN_COUNT)),
            ("nb", NBWeighting()),
            ("lr", RoundedLogisticRegression(max_iter=2000)),
        ]
    )


def choose(train, stop_words):
    """Cross-validate the grid on the training rows; return the search."""
    candidates = stop_word_candidates(stop_words).items()
    analyzers = [Analyzer(n, model.default_settings(s)) for n, s in candidates]
    grid = {"vec__analyzer": analyzers, **GRID}
    search = GridSearchCV(pipeline(), grid, cv=CV, scoring="accuracy", n_jobs=1)
    return search.fit(train["text"], train["target"])


def to_weights(fitted):
    """Return the model.json document for a fitted pipeline."""
    vec, nb, lr = (fitted.named_steps[k] for k in ("vec", "nb", "lr"))
    return {
        "format_version": model.FORMAT_VERSION,
        "labels": list(model.LABELS),
        "alpha": nb.alpha,
        "C": lr.C,
        "intercept": float(lr.intercept_[0]),
        "terms": vec.get_feature_names_out().tolist(),
        "positive_counts": nb.positive_counts_.astype(int).tolist(),
        "negative_counts": nb.negative_counts_.astype(int).tolist(),
        "log_count_ratios": nb.ratios_.tolist(),
        "coefficients": lr.coef_[0].tolist(),
    }


class Baseline2020:
    """The 2020 approach: a linear regression on two summed word frequencies per tweet."""

    TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")

    def __init__(self, stop_words):
        self.stop_words = set(stop_words)
        self.stem = PorterStemmer().stem

    def tokens(self, text):
        text = re.sub(r"https?://\S+|#|@\w+|^RT\s+", "", text)
        # Its bug, kept: stop words were removed before case-folding, "not" and "no" among them.
        return [self.stem(t.lower()) for t in self.TOKEN.findall(text) if t not in self.stop_words]

    def features(self, rows):
        """Return each tweet's summed positive and negative counts, from its tokens."""
        return np.array([[sum(self.pos[w] for w in r), sum(self.neg[w] for w in r)] for r in rows])

    def fit(self, texts, y):
        rows = [self.tokens(t) for t in texts]
        self.pos, self.neg = Counter(), Counter()
        for tokens, label in zip(rows, y, strict=True):
            (self.pos if label == 1 else self.neg).update(tokens)
        self.lr = LinearRegression().fit(self.features(rows), y)
        return self

    def scores(self, texts):
        return self.lr.predict(self.features([self.tokens(t) for t in texts]))


def evaluate(y, scores):
    """Return the card's figures for scores of Positive (clipped to [0, 1] for log loss)."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=float)
    pred = (scores >= 0.5).astype(int)
    return {
        "accuracy": metrics.accuracy_score(y, pred),
        "precision": metrics.precision_score(y, pred),
        "recall": metrics.recall_score(y, pred),
        "f1": metrics.f1_score(y, pred),
        "roc_auc": metrics.roc_auc_score(y, scores),
        "log_loss": metrics.log_loss(y, np.clip(scores, 1e-6, 1 - 1e-6)),
        "confusion": metrics.confusion_matrix(y, pred, labels=[0, 1]).tolist(),
    }


def plot(path, y, ours, old):
    """Draw the ROC curves of both models and our confusion matrix."""
    fig, (roc, cm) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, scores in (("NB-weighted logistic regression", ours), ("2020 approach", old)):
        fpr, tpr, _ = metrics.roc_curve(y, scores)
        roc.plot(fpr, tpr, label=f"{name} (AUC {metrics.roc_auc_score(y, scores):.3f})")
    roc.plot([0, 1], [0, 1], "k:", linewidth=1)
    roc.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC, test rows")
    roc.legend(loc="lower right")
    matrix = metrics.confusion_matrix(y, np.asarray(ours) >= 0.5)
    metrics.ConfusionMatrixDisplay(matrix, display_labels=model.LABELS).plot(ax=cm, colorbar=False)
    cm.set_title("Confusion matrix, test rows")
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def evaluation(data_path, data_sha, df, train, test, search, ours, old):
    """Return the model card's figures as data: evaluation.json, which /api/v1/model serves."""
    keys = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
    best = search.best_params_
    return {
        "training_data": {
            "file": data_path.name,
            "sha256": data_sha,
            "tweets": len(df),
            "source": "Sentiment140 (April-June 2009), labelled by emoticons",
            "reference_split": {"train": len(train), "test": len(test)},
        },
        "figures": {
            "test_rows": len(test),
            "this_model": {k: round(float(ours[k]), 4) for k in keys},
            "approach_2020": {k: round(float(old[k]), 4) for k in keys},
        },
        "cross_validation": {
            "folds": CV.get_n_splits(),
            "mean_accuracy": round(float(search.best_score_), 4),
            "chosen": {
                "stop_words": repr(best["vec__analyzer"]),
                "alpha": best["nb__alpha"],
                "C": best["lr__C"],
            },
        },
    }


def card(data_path, data_sha, df, train, test, search, ours, old, weights):
    """Return the model card in Markdown."""
    rows = [
        ("Accuracy", "accuracy", "{:.1%}"),
        ("Precision (Positive)", "precision", "{:.3f}"),
        ("Recall (Positive)", "recall", "{:.3f}"),
        ("F1 (Positive)", "f1", "{:.3f}"),
        ("ROC AUC", "roc_auc", "{:.3f}"),
        ("Log loss", "log_loss", "{:.3f}"),
    ]
    table = "\n".join(f"| {n} | {f.format(ours[k])} | {f.format(old[k])} |" for n, k, f in rows)
    (tn, fp), (fn, tp) = ours["confusion"]
    (otn, ofp), (ofn, otp) = old["confusion"]
    best = search.best_params_
    analyzers = search.param_grid["vec__analyzer"]
    prior = model.sigmoid(weights["intercept"])
    return f"""# Model card: tweet sentiment

NB-weighted logistic regression on words and word pairs (Wang & Manning, 2012). Each term present
in a tweet is a feature worth its smoothed log-count ratio (how much more often it appeared in
positive than in negative training tweets); scikit-learn's `LogisticRegression` weighs them.

## Data
`{data_path.name}` (SHA-256 `{data_sha[:16]}…`), {len(df):,} tweets from Sentiment140 (April–June
2009), labelled by the emoticons they carried, which were stripped from the text.
Reference split: per class, the first 80% of rows train ({len(train):,}) and the rest test
({len(test):,}).

## Figures on the {len(test):,} test rows
Both models were trained on the same {len(train):,} training rows in the same run of `train.py`.

| Figure | This model | 2020 approach |
| --- | --- | --- |
{table}

Confusion matrices (rows: true Negative, Positive; columns: predicted Negative, Positive):

| | This model | 2020 approach |
| --- | --- | --- |
| true Negative | {tn} / {fp} | {otn} / {ofp} |
| true Positive | {fn} / {tp} | {ofn} / {otp} |

![ROC curves and confusion matrix]({PLOT_FILE})

The 2020 approach, re-implemented in `train.py`: stop words removed before case-folding ("not" and
"no" among them), Porter stems, two features per tweet (the summed positive and negative training
counts of its words), a linear regression thresholded at 0.5. Its log loss clips its output to
[1e-6, 1 - 1e-6].

## Choices
Chosen by {CV.get_n_splits()}-fold cross-validation on the training rows only (mean accuracy
{search.best_score_:.1%}), never on the test rows:

- stop words: `{best["vec__analyzer"]!r}` (candidates: {", ".join(map(repr, analyzers))})
- smoothing alpha: {best["nb__alpha"]} (candidates: {GRID["nb__alpha"]})
- regularisation C: {best["lr__C"]} (candidates: {GRID["lr__C"]})

Fixed: terms seen in fewer than {MIN_COUNT} training tweets are dropped; URLs, @mentions and HTML
entities are dropped; text is case-folded, apostrophes folded ("don't" = "dont"), letters repeated
three or more times cut to two, emoticons, "!" and "?" kept as tokens, words Porter-stemmed.
Log-count ratios, coefficients and the intercept are rounded to {DECIMALS} decimal places, in
cross-validation as in the shipped model, so that retraining gives the same files on any machine.

## The shipped model
Fitted with those choices on all {len(df):,} rows: {len(weights["terms"]):,} terms. Scores are
probabilities of Positive; 0.5 or more is Positive. A tweet with no known term (empty, only a URL,
another language) gets the intercept alone: probability
{prior:.3f}, labelled {model.postprocess(prior)}.

## Limits
Trained on 2009 English tweets: slang, emoji and topics since then are unknown words. Sarcasm and
mixed feelings defeat a bag of words. There is no neutral label.

Built with Python {sys.version_info.major}.{sys.version_info.minor}, scikit-learn
{sklearn.__version__}, NumPy {np.__version__}, pandas {pd.__version__}.
"""


def write_json(path, document):
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV: id,date,text,target")
    parser.add_argument("--out", type=Path, default=model.ARTIFACTS_DIR, help="artifacts folder")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"no data at {args.data}: pass --data (make train DATA=path/to.csv)")

    df = read_data(args.data)
    train, test = reference_split(df)
    print(f"{len(df):,} tweets: {len(train):,} train, {len(test):,} test", flush=True)
    english = nltk_stop_words()
    search = choose(train, english)
    print(f"cross-validation chose {search.best_params_} ({search.best_score_:.4f})", flush=True)
    ours = search.best_estimator_.predict_proba(test["text"])[:, 1]
    old = Baseline2020(english)
    old = old.fit(train["text"], train["target"]).scores(test["text"])
    ours_figures, old_figures = evaluate(test["target"], ours), evaluate(test["target"], old)

    shipped = pipeline().set_params(**search.best_params_).fit(df["text"], df["target"])
    check_rounding(shipped)
    weights = to_weights(shipped)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / model.PREPROCESSING_FILE, search.best_params_["vec__analyzer"].settings)
    write_json(args.out / model.MODEL_FILE, weights)
    data_sha = hashlib.sha256(args.data.read_bytes()).hexdigest()
    figures = evaluation(args.data, data_sha, df, train, test, search, ours_figures, old_figures)
    write_json(args.out / model.EVALUATION_FILE, figures)
    digests = {
        name: hashlib.sha256((args.out / name).read_bytes()).hexdigest()
        for name in (model.PREPROCESSING_FILE, model.MODEL_FILE, model.EVALUATION_FILE)
    }
    manifest = "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items()))
    (args.out / model.MANIFEST_FILE).write_text(manifest, encoding="utf-8")
    plot(args.out / PLOT_FILE, test["target"], ours, old)
    text = card(args.data, data_sha, df, train, test, search, ours_figures, old_figures, weights)
    (args.out / CARD_FILE).write_text(text, encoding="utf-8")

    print(f"{'':12} {'this model':>11} {'2020':>8}")
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"):
        print(f"{key:12} {ours_figures[key]:11.4f} {old_figures[key]:8.4f}")
    size = sum(f.stat().st_size for f in args.out.iterdir())
    # The artifacts just written must load.
    print(f"wrote {args.out} ({size / 1e6:.2f} MB), model version {model.load(args.out).version}")
    return {"ours": ours_figures, "2020": old_figures}


if __name__ == "__main__":
    main()
