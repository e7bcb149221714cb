import numpy as np
import pandas as pd
import pytest

import dcpt_law as dl
from conftest import synthetic_table


@pytest.fixture
def df():
    return synthetic_table(0).head(60).copy()


def test_valid_table_roundtrips_through_csv(tmp_path, df):
    df["note"] = "kept"
    p = tmp_path / "l.csv"
    df.to_csv(p, index=False)
    back = dl.load_losses(p)
    assert len(back) == len(df) and (back["note"] == "kept").all()


def test_parquet_or_missing_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        dl.load_losses(tmp_path / "nope.csv")


def test_missing_column(df):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['domain_loss'\]"):
        dl.load_losses(df.drop(columns="domain_loss"))


def test_nan_loss_names_rows(df):
    df.loc[[3, 7], "general_loss"] = np.nan
    with pytest.raises(ValueError, match=r"'general_loss' has NaN.*rows 3, 7"):
        dl.load_losses(df)


def test_ratio_outside_unit_interval(df):
    df.loc[5, "domain_ratio"] = 25
    with pytest.raises(ValueError, match=r"'domain_ratio' must be in \[0, 1\].*row 5: e\.g\. 25$"):
        dl.load_losses(df)


def test_non_positive_loss(df):
    df.loc[2, "domain_loss"] = 0.0
    with pytest.raises(ValueError, match=r"'domain_loss' must be > 0.*row 2"):
        dl.load_losses(df)


def test_non_numeric_loss(df):
    df["domain_loss"] = df["domain_loss"].astype(object)
    df.loc[4, "domain_loss"] = "oops"
    with pytest.raises(ValueError, match=r"'domain_loss' has non-numeric values in row 4"):
        dl.load_losses(df)


def test_duplicate_rows(df):
    dup = pd.concat([df, df.iloc[[10]]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate rows"):
        dl.load_losses(dup)


def test_two_tokenizers_in_one_table(df):
    one = df.assign(tokenizer="aaa")
    assert len(dl.load_losses(one)) == len(df)  # one tokenizer: fine
    two = one.copy()
    two.loc[two.index[:7], "tokenizer"] = "bbb"
    with pytest.raises(ValueError, match=r"'tokenizer' has 2 values \(aaa: \d+ rows, bbb: 7 rows\)"):
        dl.load_losses(two)


def test_string_counts(df):
    df["model_size"] = df["model_size"].map(lambda n: f"{n / 1e6:g}M")
    df["tokens"] = df["tokens"].astype(object)
    df.loc[0, "tokens"] = "0"
    out = dl.load_losses(df)
    assert out["model_size"].dtype == float and out["model_size"].min() == 1e5
    assert dl.parse_count("1.8B") == 1.8e9 and dl.parse_count("500M") == 5e8
    assert dl.parse_count("2.5e9") == 2.5e9 and dl.parse_count("10k") == 1e4
    with pytest.raises(ValueError, match="not a count"):
        dl.parse_count("lots")


def test_bad_size_string(df):
    df["model_size"] = df["model_size"].astype(object)
    df.loc[1, "model_size"] = "big"
    with pytest.raises(ValueError, match="column 'model_size'.*'big'"):
        dl.load_losses(df)


def test_too_few_distinct_values_for_an_exponent():
    t = synthetic_table(0, sizes=np.array([1e6]))
    with pytest.raises(ValueError, match=r"1 distinct value\(s\) of 'model_size'"):
        dl.fit(t, warn=False)
    t = synthetic_table(0, ratios=np.array([0.5]))
    with pytest.raises(ValueError, match="'domain_ratio'"):
        dl.fit(t, warn=False)
    t = synthetic_table(0, tokens=np.array([1e7]))
    with pytest.raises(ValueError, match="'tokens'"):
        dl.fit(t, warn=False)


def test_several_domains_need_a_choice(df):
    two = pd.concat([df, df.assign(domain="math")], ignore_index=True)
    with pytest.raises(ValueError, match="several domains"):
        dl.fit(two, warn=False)
    with pytest.raises(ValueError, match="not in the table"):
        dl.fit(two, domain="law", warn=False)


def test_bad_arguments(df):
    with pytest.raises(ValueError, match="target="):
        dl.fit(df, target="both-ish")
    with pytest.raises(ValueError, match="bootstrap="):
        dl.fit(df, bootstrap=-1)


def test_bad_prediction_inputs(fitted):
    with pytest.raises(ValueError, match="domain_ratio must be in"):
        fitted.predict(1e6, 1e7, 1.5, target="domain")
    with pytest.raises(ValueError, match="tokens must be > 0"):
        fitted.predict(1e6, 0, 0.5, target="domain")
    with pytest.raises(ValueError, match="model_size"):
        fitted.predict(-1, 1e7, 0.5, target="domain")
    with pytest.raises(KeyError, match="no 'other'-loss"):
        fitted["other"]


def test_load_fit_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        dl.load_fit(tmp_path / "x.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        dl.load_fit(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text('{"schema_version": 0}')
    with pytest.raises(ValueError, match="schema_version"):
        dl.load_fit(tmp_path / "old.json")
