"""What the codecs and latents are worth: rate–distortion against JPEG / WebP / AVIF, utility
(downstream accuracy at matched bpp), the seed setting's cost, benchmarks and plots.

The top floor: it may import every other part of the library.
"""
