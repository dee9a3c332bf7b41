import pytest
import torch

from classifier.model import ResNetWithEmbedding, build_backbone


@pytest.mark.parametrize("arch", ["tiny", "resnet50"])
def test_wrapper_returns_the_backbones_own_logits_and_2048d_embedding(arch):
    torch.manual_seed(0)
    backbone = build_backbone(arch, num_classes=5).eval()
    model = ResNetWithEmbedding(backbone).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        logits, embedding = model(x)
        reference = backbone(x)
        refit = backbone.fc(embedding)
    assert torch.equal(logits, reference)
    assert embedding.shape == (2, 2048)
    assert torch.allclose(refit, logits)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="resnet50, tiny"):
        build_backbone("vgg", 3)
