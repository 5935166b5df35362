"""Train the iris example model (runs at image build time).

Fits a scikit-learn LogisticRegression on the iris data set that ships inside
scikit-learn (sklearn.datasets.load_iris: no download), reports the held-out
accuracy, refits on all 150 rows and pickles a bundle to $MODEL_DIR/model.pkl
(default /model/model.pkl) with the class names the server answers with.

It also exports the fitted parameters (coef_, intercept_) to linear.json and
checks, on all 150 rows, that softmax(x @ coef_.T + intercept_) equals
model.predict_proba(x): the server's default backend evaluates that with the
standard library alone and is healthy in well under a second, where unpickling
the estimator imports scikit-learn and scipy (about 1.1 s). MODEL_BACKEND=sklearn
makes the server use model.pkl and predict_proba instead.
"""

import json
import os
import pickle
import sys

import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

MODEL_NAME = "iris-logreg"


def main() -> int:
    out_dir = os.environ.get("MODEL_DIR", "/model")
    iris = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, iris.target, test_size=0.25, random_state=0, stratify=iris.target
    )
    accuracy = LogisticRegression(max_iter=1000).fit(x_train, y_train).score(x_test, y_test)
    if accuracy < 0.9:
        print(f"held-out accuracy {accuracy:.3f} is below 0.9", file=sys.stderr)
        return 1
    model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
    coef, intercept = model.coef_, model.intercept_
    logits = iris.data @ coef.T + intercept
    own = np.exp(logits - logits.max(axis=1, keepdims=True))
    own /= own.sum(axis=1, keepdims=True)
    if not np.allclose(own, model.predict_proba(iris.data), rtol=0, atol=1e-9):
        print("exported linear parameters do not reproduce predict_proba", file=sys.stderr)
        return 1

    metadata = {
        "name": MODEL_NAME,
        "classes": [str(c) for c in iris.target_names],
        "feature_names": list(iris.feature_names),
        "n_features": int(iris.data.shape[1]),
        "heldout_accuracy": round(float(accuracy), 4),
        "sklearn_version": sklearn.__version__,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "model.pkl"), "wb") as f:
        pickle.dump({"model": model, **metadata}, f, protocol=pickle.HIGHEST_PROTOCOL)
    with open(os.path.join(out_dir, "linear.json"), "w") as f:
        json.dump({**metadata, "coef": coef.tolist(), "intercept": intercept.tolist()}, f)
    with open(os.path.join(out_dir, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2)
    print(f"trained {MODEL_NAME}: held-out accuracy {accuracy:.3f}, saved {out_dir}/model.pkl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
