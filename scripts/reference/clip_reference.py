"""Reference outputs of randomly initialised CLIP-family models, for the import parity tests: a
Hugging Face CLIPModel, an open_clip CLIP ViT and ModifiedResNet (RN50), and an open_clip model of
the BiomedCLIP layout (timm ViT + Hugging Face BERT with an MLP projection, [CLS] pooling).

The CLIP tokenizer is built from open_clip's shipped BPE vocabulary (the same merges OpenAI CLIP
and every Hugging Face CLIP checkpoint use), the way Hugging Face converted it: byte-level
symbols, `</w>` word ends, `<|startoftext|>` / `<|endoftext|>`. The model is small but has the
real vocabulary and context length, and every weight (norms and biases included) is random, so
no part of the arithmetic is hidden by an identity initialisation.

Writes into OUT_DIR:
  hf_safetensors/   config.json, model.safetensors, tokenizer.json, preprocessor_config.json
  hf_bin/           the same weights as pytorch_model.bin (torch.save of the state dict)
  reference.safetensors   pixel_values, image_embeds, text_embeds (L2-normalised), logits
  reference.json    sentences (200, with their token ids) and which of them text_embeds holds
  openclip_vit/     open_clip_config.json + open_clip_model.safetensors (no tokenizer: the
                    importer builds it from the BPE vocabulary), and its reference files
  openclip_vit_bin/ the same as open_clip_pytorch_model.bin
  openclip_rn50/    open_clip's ModifiedResNet (the OpenAI RN50 layout) + its text transformer, as
                    open_clip_pytorch_model.bin, and its reference files
  biomedclip/       open_clip_config.json + open_clip_pytorch_model.bin, the BERT tokenizer.json
                    and, under text/, the BERT config.json; and its reference files
  pmcclip/          checkpoint.pt in the layout of PMC-CLIP's release (a training checkpoint:
                    epoch, name, optimizer, and the model under state_dict with `module.`), under
                    text/ the BERT config.json and tokenizer.json; and its reference files

    python scripts/reference/clip_reference.py BPE_VOCAB_GZ BERT_TOKENIZER_JSON OUT_DIR
"""

import gzip
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def clip_vocab(bpe_gz):
    """vocab and merges exactly as open_clip's SimpleTokenizer builds them."""
    merges = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges[1 : 49152 - 256 - 2 + 1]]
    vocab = bytes_to_unicode()
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, [" ".join(m) for m in merges]


def sentences():
    base = [
        "A chest X-ray showing a right lower lobe pneumonia.",
        "axial CT of the abdomen with contrast",
        "MRI T2-weighted image: hyperintense lesion in the left temporal lobe",
        "No acute cardiopulmonary process.",
        "Échographie abdominale — foie normal, pas de lésion focale.",
        "胸部X線写真：右下葉の浸潤影",
        "Röntgen Thorax: kein Pneumothorax; Herzgröße normal.",
        "ultrasound of the thyroid (5.2 × 3.1 cm nodule) — TI-RADS 4",
        "H&E stain, ×40: atypical mitoses; Ki-67 ≈ 30%",
        "😷 covid-19 ground-glass opacities!!!",
        "  leading and trailing   spaces  ",
        "UPPER CASE REPORT WITH NUMBERS 12345 AND SYMBOLS #@$%^&*()",
        "tabs\tand\nnewlines\r\nin a caption",
        "a photo of a brain MRI",
        "",
    ]
    long = " ".join(["bilateral pleural effusions with compressive atelectasis"] * 30)
    out = list(base) + [long]
    g = torch.Generator().manual_seed(7)
    words = ("lung heart liver opacity nodule mass fracture effusion consolidation edema "
             "cardiomegaly pneumothorax atelectasis 3.5cm left right upper lower lobe "
             "CT MRI X-ray ultrasound T1 T2 FLAIR DWI ñandú naïve café résumé μm ≥ ≤ ± °").split()
    while len(out) < 200:
        n = int(torch.randint(1, 40, (1,), generator=g))
        idx = torch.randint(0, len(words), (n,), generator=g).tolist()
        out.append(" ".join(words[i] for i in idx))
    return out


def randomise(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


def randomise_bn_stats(model, g):
    """Random BatchNorm running statistics, so normalisation is not an identity either."""
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


# The tensors whose AdamW update the trainer's step test compares (open_clip names).
STEP_TENSORS = [
    "visual.conv1.weight", "visual.proj", "visual.transformer.resblocks.0.attn.in_proj_weight",
    "visual.ln_post.weight", "transformer.resblocks.1.mlp.c_fc.weight", "ln_final.bias",
    "text_projection", "token_embedding.weight", "positional_embedding", "logit_scale",
]


def step_reference(model, tok, texts, g, d):
    """One CLIP training step of open_clip in PyTorch: symmetric InfoNCE at exp(logit_scale), then
    AdamW with eps = 1000, so each parameter's update is (nearly) proportional to its gradient
    and the comparison tests gradients rather than their signs. Saves the batch, the loss and the
    updated tensors of STEP_TENSORS."""
    import copy

    import torch.nn.functional as F

    m = copy.deepcopy(model).train()
    step_texts = [texts[i] for i in (0, 20, 30, 40)]
    pixels = torch.randn(4, 3, 32, 32, generator=g)
    opt = torch.optim.AdamW(m.parameters(), lr=1.0, betas=(0.9, 0.999), eps=1000.0, weight_decay=0.0)
    v = F.normalize(m.encode_image(pixels), dim=-1)
    t = F.normalize(m.encode_text(tok(step_texts)), dim=-1)
    logits = m.logit_scale.exp() * v @ t.T
    target = torch.arange(len(step_texts))
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    loss.backward()
    opt.step()
    state = m.state_dict()
    save_file({"pixels": pixels.contiguous(), "loss": loss.detach().reshape(1),
               **{f"after.{k}": state[k].detach().contiguous() for k in STEP_TENSORS}},
              d / "step.safetensors")
    (d / "step.json").write_text(json.dumps({"texts": step_texts, "lr": 1.0, "eps": 1000.0}))


def open_clip_references(bpe_gz, bert_tokenizer, out, texts, embed_idx):
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP
    from transformers import BertConfig

    g = torch.Generator().manual_seed(13)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]

    def finish(model, tokens, pixels, d, extra=None):
        with torch.no_grad():
            t = model.encode_text(tokens, normalize=True)
            i = model.encode_image(pixels, normalize=True)
        save_file({"pixel_values": pixels.contiguous(), "image_embeds": i.contiguous(),
                   "text_embeds": t.contiguous()}, d / "reference.safetensors")
        ref = {"sentences": texts, "embedded": embed_idx}
        ref.update(extra or {})
        (d / "reference.json").write_text(json.dumps(ref, ensure_ascii=False))

    # The OpenAI/LAION layout: open_clip's own VisionTransformer and TextTransformer, QuickGELU.
    cfg = dict(embed_dim=16, quick_gelu=True,
               vision_cfg=dict(image_size=32, layers=2, width=48, patch_size=8, head_width=12),
               text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=2))
    torch.manual_seed(1)
    model = CLIP(**cfg).eval()
    randomise(model)
    d = out / "openclip_vit"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": mean, "std": std}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "open_clip_model.safetensors")
    b = out / "openclip_vit_bin"
    b.mkdir()
    shutil.copy(d / "open_clip_config.json", b / "open_clip_config.json")
    torch.save(model.state_dict(), b / "open_clip_pytorch_model.bin")
    tok = open_clip.get_tokenizer("ViT-B-32")
    ids = [[int(x) for x in row if x != 0] for row in tok(texts)]
    finish(model, tok([texts[i] for i in embed_idx]), torch.randn(3, 3, 32, 32, generator=g), d,
           {"open_clip_token_ids": ids})
    step_reference(model, tok, texts, g, d)

    # The OpenAI RN50 layout: open_clip's ModifiedResNet (random BatchNorm statistics too).
    cfg = dict(embed_dim=16, quick_gelu=True,
               vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=8, head_width=64),
               text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=2))
    torch.manual_seed(4)
    model = CLIP(**cfg).eval()
    randomise(model)
    randomise_bn_stats(model, g)
    d = out / "openclip_rn50"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": mean, "std": std}}))
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    finish(model, tok([texts[i] for i in embed_idx]), torch.randn(3, 3, 64, 64, generator=g), d)

    # The BiomedCLIP layout: timm ViT (at 224 px: open_clip builds timm towers at their own
    # size), a Hugging Face BERT text tower, [CLS] pooling, MLP projection.
    d = out / "biomedclip"
    (d / "text").mkdir(parents=True)
    BertConfig(vocab_size=123, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=64).save_pretrained(d / "text")
    shutil.copy(bert_tokenizer, d / "tokenizer.json")
    shutil.copy(bert_tokenizer, d / "text" / "tokenizer.json")
    cfg = dict(embed_dim=16,
               vision_cfg=dict(timm_model_name="vit_tiny_patch16_224", timm_model_pretrained=False,
                               timm_pool="", timm_proj="linear", image_size=224),
               text_cfg=dict(hf_model_name=str(d / "text"), hf_tokenizer_name=str(d / "text"),
                             hf_proj_type="mlp", hf_pooler_type="cls_last_hidden_state_pooler",
                             context_length=64, hf_model_pretrained=False))
    torch.manual_seed(2)
    model = CustomTextCLIP(**cfg).eval()
    randomise(model)
    # The config a user downloads names the hub model; ours must not point into this machine.
    cfg["text_cfg"]["hf_model_name"] = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    cfg["text_cfg"]["hf_tokenizer_name"] = cfg["text_cfg"]["hf_model_name"]
    (d / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": mean, "std": std}}))
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    from transformers import PreTrainedTokenizerFast
    bert_tok = PreTrainedTokenizerFast(tokenizer_file=str(bert_tokenizer), pad_token="[PAD]")
    sub = [texts[i] for i in embed_idx]
    tokens = bert_tok(sub, return_tensors="pt", max_length=64, padding="max_length",
                      truncation=True)["input_ids"]
    finish(model, tokens, torch.randn(3, 3, 224, 224, generator=g), d)


def pmc_clip_reference(bert_tokenizer, out, texts, embed_idx):
    """PMC-CLIP's layout, written from its published model definition: open_clip's ModifiedResNet
    (PMC-CLIP's copy has the same names) as `visual`, a Hugging Face BertModel as `text_encoder`,
    whose [CLS] output goes through the bare `text_projection` (x @ W). PMC-CLIP runs that BERT
    on texts padded to 77 tokens with no attention mask, so the padding changes the embedding; the
    reference does the same. Its training-only parts (fusion transformer, masked-language head)
    are in the checkpoint too, with random values."""
    import math

    import torch.nn.functional as F
    from open_clip.modified_resnet import ModifiedResNet
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    g = torch.Generator().manual_seed(17)
    d = out / "pmcclip"
    (d / "text").mkdir(parents=True)
    bert_cfg = BertConfig(vocab_size=123, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=80)
    bert_cfg.save_pretrained(d / "text")
    shutil.copy(bert_tokenizer, d / "text" / "tokenizer.json")
    torch.manual_seed(5)
    visual = ModifiedResNet(layers=[1, 2, 1, 1], output_dim=16, heads=4, image_size=64, width=8).eval()
    bert = BertModel(bert_cfg).eval()
    randomise(visual)
    randomise(bert)
    randomise_bn_stats(visual, g)
    projection = torch.randn(32, 16, generator=g) / 32**0.5
    state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    state.update({f"text_encoder.{k}": v for k, v in bert.state_dict().items()})
    state.update({
        "text_projection": projection,
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
        "positional_embedding": torch.randn(77, 32, generator=g),
        "ln_final.weight": torch.ones(32), "ln_final.bias": torch.zeros(32),
        "mlm_projection": torch.randn(32, 123, generator=g),
        "img_special_token": torch.zeros(1, 1, 16),
        "fusion_module.resblocks.0.ln_1.weight": torch.ones(32),
        "fusion_module.resblocks.0.attn.in_proj_weight": torch.randn(96, 32, generator=g),
    })
    torch.save({
        "epoch": 100,
        "name": "pmc-clip-random",
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}},
                      "param_groups": [{"lr": 1e-4, "params": [0]}]},
    }, d / "checkpoint.pt")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(bert_tokenizer), pad_token="[PAD]")
    sub = [texts[i] for i in embed_idx]
    ids = tok(sub, padding="max_length", truncation=True, max_length=77, return_tensors="pt")["input_ids"]
    pixels = torch.randn(3, 3, 64, 64, generator=g)
    with torch.no_grad():
        t = F.normalize(bert(input_ids=ids).last_hidden_state[:, 0] @ projection, dim=-1)
        i = F.normalize(visual(pixels), dim=-1)
    save_file({"pixel_values": pixels.contiguous(), "image_embeds": i.contiguous(),
               "text_embeds": t.contiguous()}, d / "reference.safetensors")
    (d / "reference.json").write_text(json.dumps({"sentences": texts, "embedded": embed_idx},
                                                 ensure_ascii=False))


def main(bpe_gz, bert_tokenizer, out):
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    st_dir, bin_dir = out / "hf_safetensors", out / "hf_bin"
    st_dir.mkdir(parents=True)
    bin_dir.mkdir(parents=True)

    vocab, merges = clip_vocab(bpe_gz)
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"))
    tok.model_max_length = 77

    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                         eos_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    randomise(model)
    model.save_pretrained(st_dir)
    tok.save_pretrained(st_dir)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(st_dir)
    for f in st_dir.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, bin_dir / f.name)
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")

    texts = sentences()
    ids = [tok(t, truncation=True, max_length=77)["input_ids"] for t in texts]
    embed_idx = list(range(0, 200, 10)) + [15]  # 15 is the long one: truncated to 77
    batch = tok([texts[i] for i in embed_idx], padding=True, truncation=True, max_length=77,
                return_tensors="pt")
    g = torch.Generator().manual_seed(11)
    pixels = torch.randn(4, 3, 32, 32, generator=g)
    with torch.no_grad():
        out_t = model.get_text_features(**batch)
        out_i = model.get_image_features(pixel_values=pixels)
    t = out_t if torch.is_tensor(out_t) else out_t.pooler_output
    i = out_i if torch.is_tensor(out_i) else out_i.pooler_output
    t = t / t.norm(dim=-1, keepdim=True)
    i = i / i.norm(dim=-1, keepdim=True)
    save_file({
        "pixel_values": pixels.contiguous(),
        "image_embeds": i.contiguous(),
        "text_embeds": t.contiguous(),
        "logits": (model.logit_scale.exp() * i @ t.T).contiguous(),
    }, out / "reference.safetensors")
    (out / "reference.json").write_text(json.dumps({
        "sentences": texts, "token_ids": ids, "embedded": embed_idx,
    }, ensure_ascii=False))
    open_clip_references(bpe_gz, bert_tokenizer, out, texts, embed_idx)
    pmc_clip_reference(bert_tokenizer, out, texts, embed_idx)
    print(f"clip references written to {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
