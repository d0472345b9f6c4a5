"""Reference outputs of torchvision vision towers with random weights, for the candle parity test.

For each tower: seeded random weights (BatchNorm running statistics filled by a few training-mode
passes so the BN fold is exercised with non-trivial statistics), a seeded input batch, and the
pooled output in eval mode. Saved as safetensors with our tensor names (`vision.` + torchvision
names, CLIP `attnpool.*`) plus `input` and `output`, and a JSON sidecar with the tower config.

    python scripts/reference/vision_reference.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.vision_transformer import VisionTransformer


class AttentionPool2d(nn.Module):
    """CLIP's attention pool (openai/CLIP model.py), as MIRAGE uses it on the ResNet-50 grid."""

    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x):
        x = x.flatten(start_dim=2).permute(2, 0, 1)  # NCHW -> (HW)NC
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x,
            embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False,
        )
        return x.squeeze(0)


class ResNetTower(nn.Module):
    def __init__(self, trunk, pool):
        super().__init__()
        for name in ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]:
            setattr(self, name, getattr(trunk, name))
        self.pool = pool
        if pool == "attention":
            dim = trunk.fc.in_features
            self.attnpool = AttentionPool2d(7, dim, 8)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.pool == "attention":
            return self.attnpool(x)
        return x.mean(dim=(2, 3))


def randomise_bn_stats(model, size):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the passes below
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, size, size))
    model.eval()


def export(name, model, config, size, out_dir, batch=2):
    torch.manual_seed(1234)
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        y = model(x)
    tensors = {f"vision.{k}": v.detach().contiguous().float() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    tensors["input"] = x.contiguous()
    tensors["output"] = y.contiguous()
    save_file(tensors, str(out_dir / f"{name}.safetensors"))
    (out_dir / f"{name}.json").write_text(json.dumps(config, indent=1))
    print(f"{name}: output {tuple(y.shape)}, |y|max {y.abs().max():.4g}")


out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(2)

torch.manual_seed(50)
rn50 = ResNetTower(resnet50(weights=None), "attention")
randomise_bn_stats(rn50, 224)
export("resnet50_attention", rn50, {"kind": "resnet", "layers": [3, 4, 6, 3], "bottleneck": True, "width": 64,
       "pooling": "attention", "attention_heads": 8, "image_size": 224}, 224, out_dir)

torch.manual_seed(18)
rn18 = ResNetTower(resnet18(weights=None), "mean")
randomise_bn_stats(rn18, 96)
export("resnet18_mean", rn18, {"kind": "resnet", "layers": [2, 2, 2, 2], "bottleneck": False, "width": 64,
       "pooling": "mean", "attention_heads": 8, "image_size": 96}, 96, out_dir)

torch.manual_seed(16)
vit = VisionTransformer(image_size=64, patch_size=16, num_layers=3, num_heads=4, hidden_dim=128, mlp_dim=256)
vit.heads = nn.Identity()
with torch.no_grad():  # torchvision zero-initialises these; give the test something to check
    vit.class_token.normal_(0, 0.5)
    for m in vit.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
        if isinstance(m, nn.MultiheadAttention):
            nn.init.uniform_(m.in_proj_bias, -0.1, 0.1)
vit.eval()
export("vit_small", vit, {"kind": "vit", "image_size": 64, "patch_size": 16, "hidden_size": 128, "num_layers": 3,
       "num_heads": 4, "mlp_dim": 256, "layer_norm_eps": 1e-6}, 64, out_dir)
