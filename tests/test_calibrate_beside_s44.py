"""A measurements CSV naming a built-in model's id in another case (`Llama-3.1-8B`) beside a
folder of that name holding a config.json (a 4-layer harness of the 8B): the folder is read
wherever the command runs. It had been read only when run from the CSV's own folder; from
elsewhere the built-in 32-layer model was fitted to the same rows (a hostile-input probe,
session 44: defaults' error 43.5% from one folder, 478.9% from another)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wattserve.calibrate.measurements import read_measurements
from wattserve.core.modelspec import load_model

CONFIG = {
    "hidden_size": 4096,
    "num_hidden_layers": 4,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "model_type": "llama",
}
HEAD = "model,hardware,count,tensor_parallel,dtype,phase,batch,prompt_tokens,context_tokens,"
HEAD += "seconds,watts\n"


@pytest.mark.parametrize("run_from", ["csv", "elsewhere"])
def test_a_case_variant_of_a_built_in_id_beside_the_csv_is_read_from_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_from: str
) -> None:
    folder = tmp_path / "runs"
    (folder / "Llama-3.1-8B").mkdir(parents=True)
    (folder / "Llama-3.1-8B" / "config.json").write_text(json.dumps(CONFIG))
    csv = folder / "m.csv"
    csv.write_text(HEAD + "Llama-3.1-8B,h100-sxm,1,1,bf16,decode,8,1024,1024,0.0013,\n")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(folder if run_from == "csv" else tmp_path / "other")
    (row,) = read_measurements(csv)
    assert load_model(row.model).num_layers == 4, row.model


def test_an_exact_built_in_id_stays_the_built_in_beside_a_folder_of_its_name(
    tmp_path: Path,
) -> None:
    (tmp_path / "llama-3.1-8b").mkdir()
    (tmp_path / "llama-3.1-8b" / "config.json").write_text(json.dumps(CONFIG))
    csv = tmp_path / "m.csv"
    csv.write_text(HEAD + "llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,1024,1024,0.0013,\n")
    (row,) = read_measurements(csv)
    assert row.model == "llama-3.1-8b" and load_model(row.model).num_layers == 32
