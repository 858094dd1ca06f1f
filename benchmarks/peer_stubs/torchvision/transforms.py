"""torchvision.transforms names that dalle2-pytorch references; none of them is implemented."""

from ._stub import unavailable

CenterCrop = unavailable("transforms.CenterCrop")
Compose = unavailable("transforms.Compose")
Lambda = unavailable("transforms.Lambda")
RandomHorizontalFlip = unavailable("transforms.RandomHorizontalFlip")
RandomResizedCrop = unavailable("transforms.RandomResizedCrop")
Resize = unavailable("transforms.Resize")
ToPILImage = unavailable("transforms.ToPILImage")
ToTensor = unavailable("transforms.ToTensor")
