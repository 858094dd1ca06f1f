"""The decoder and its upsamplers (unCLIP §2.1): z_i (and caption) -> 64 px image -> 256 px -> 1024 px."""

from .conditioning import Conditioning, Context
from .config import DEGRADATIONS, PRESETS, DecoderConfig, UNetConfig, UpsamplerConfig, preset
from .decoder import Decoder
from .degrade import bsr_degrade, gaussian_blur, jpeg_compress, random_blur, random_crop
from .unet import UNet
from .upsampler import Upsampler, downsample_bicubic, upsample_bicubic
from .weights import average_decoders, load_decoder, save_decoder

__all__ = [
    "DEGRADATIONS", "PRESETS", "Conditioning", "Context", "Decoder", "DecoderConfig", "UNet", "UNetConfig",
    "Upsampler", "UpsamplerConfig", "average_decoders", "bsr_degrade", "downsample_bicubic", "gaussian_blur",
    "jpeg_compress", "load_decoder", "preset", "random_blur", "random_crop", "save_decoder", "upsample_bicubic",
]
