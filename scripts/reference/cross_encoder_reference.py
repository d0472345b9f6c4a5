"""Reference logits of Hugging Face BERT cross-encoders (BertForSequenceClassification) with
seeded random weights, for the reranker parity test (model/tests/it/parity.rs). No cross-encoder
weights can be downloaded here; two configurations cover both heads (one label: sigmoid; two
labels: softmax) and all three activations of the encoder.

For each configuration, OUT_DIR/<name>/ gets what `mirage model import-reranker` reads
(config.json, model.safetensors, tokenizer.json = the test tokenizer without its fixed padding
and truncation) and reference.json: the query, the documents, the tokens each pair reads and the
logits transformers computes (eval mode, float32, truncation to max_length, longest first).

    python scripts/reference/cross_encoder_reference.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "model/tests/fixtures/tiny_tokenizer.json"

CONFIGS = {
    "one-label-gelu": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, hidden_act="gelu", num_labels=1, seed=11,
                           max_length=32),
    "two-labels-gelu-new": dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                                intermediate_size=96, hidden_act="gelu_new", num_labels=2, seed=12,
                                max_length=24),
    "one-label-relu": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, hidden_act="relu", num_labels=1, seed=13,
                           max_length=40),
}

QUERY = "left pleural effusion"
DOCUMENTS = [
    "left pleural effusion with edema of the right lung.",
    "no pneumothorax. heart normal.",
    "the brain scan showing a normal thalamus and hippocampus.",
    "chest radiograph consistent with pneumonia, not cardiomegaly.",
    "axial ct slice of the left lung without effusion",
    # Longer than every max_length: truncation cuts the longer side first.
    " ".join(["pleural effusion consistent with edema"] * 12),
    "a photo of a cat",
    "effusion",
]


def main(out: Path) -> None:
    tok_json = json.loads(TOKENIZER.read_text())
    tok_json["truncation"] = None
    tok_json["padding"] = None
    vocab = len(tok_json["model"]["vocab"])
    for name, c in CONFIGS.items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "tokenizer.json").write_text(json.dumps(tok_json))
        torch.manual_seed(c["seed"])
        config = BertConfig(
            vocab_size=vocab, hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
            num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
            hidden_act=c["hidden_act"], max_position_embeddings=64, type_vocab_size=2,
            num_labels=c["num_labels"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
        config.architectures = ["BertForSequenceClassification"]
        model = BertForSequenceClassification(config).eval()
        # Random init leaves LayerNorm at 1/0 and biases at 0: perturb them so every tensor counts.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
            # Logits of order 1, so agreement is measured on real numbers, not on noise.
            model.classifier.weight.mul_(50.0)
        model.save_pretrained(d, safe_serialization=True)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(d / "tokenizer.json"), unk_token="[UNK]", pad_token="[PAD]",
            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        )
        batch = tokenizer([QUERY] * len(DOCUMENTS), DOCUMENTS, padding=True, truncation=True,
                          max_length=c["max_length"], return_tensors="pt",
                          # A bare PreTrainedTokenizerFast leaves segment ids out unless asked;
                          # BERT cross-encoders read the document as segment 1.
                          return_token_type_ids=True)
        assert batch["token_type_ids"].max() == 1
        with torch.no_grad():
            logits = model(**batch).logits
        (d / "reference.json").write_text(json.dumps({
            "max_length": c["max_length"],
            "num_labels": c["num_labels"],
            "query": QUERY,
            "documents": DOCUMENTS,
            "tokens": batch["attention_mask"].sum(1).tolist(),
            "logits": logits.tolist(),
        }, indent=1))
        print(f"{name}: logits {logits.shape[0]} x {logits.shape[1]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
