"""The one preparation rule and the photo check (issue 24): dataset images saved as files
score as the arrays do through every entry point; photographs as files are flagged."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lenet.data import images as images_module
from lenet.data.images import PreparedImage, looks_like_data, pictures, prepare_image
from lenet.data.originals import STATISTICS, original_statistics
from lenet.ood import photo_check, photoset


def png(pixels: np.ndarray, mode: str | None = None) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    buffer.seek(0)
    image = Image.open(buffer)
    image.load()
    return image


def dataset_like(seed: int = 0) -> np.ndarray:
    """A dark 28x28 image with a light object in the middle, as Fashion-MNIST stores them."""
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 8:20] = np.random.default_rng(seed).integers(80, 256, (16, 12))
    return pixels


def test_an_image_that_looks_like_the_data_is_taken_as_it_is():
    pixels = dataset_like()
    pixels[0, 0] = 40  # a product touching the edge: cropping would move everything
    prepared = prepare_image(png(pixels))
    np.testing.assert_array_equal(prepared.pixels, pixels)
    assert not prepared.inverted and prepared.original is None  # no photo check for it
    assert looks_like_data(png(pixels), (28, 28))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_a_grey_picture_in_a_colour_mode_is_taken_as_it_is_too(mode):
    pixels = dataset_like()
    buffer = io.BytesIO()  # as matplotlib's imsave or an image editor saves it
    png(pixels).convert(mode).save(buffer, "PNG")
    image = Image.open(buffer)
    assert image.mode == mode
    prepared = prepare_image(image)
    np.testing.assert_array_equal(prepared.pixels, pixels)
    assert prepared.original is None
    see_through = np.asarray(png(pixels).convert("RGBA")).copy()
    see_through[0, 0, 3] = 0  # one transparent pixel: composited, checked, not as it is
    assert prepare_image(png(see_through)).original is not None


def test_other_pictures_of_the_models_size_are_made_grey_and_inverted_never_cropped():
    light = 255 - dataset_like()  # a dark object on white: inverted, not re-cropped
    prepared = prepare_image(png(light))
    assert prepared.inverted
    np.testing.assert_array_equal(prepared.pixels, dataset_like())
    assert prepared.original is not None  # the photo check reads it
    colour = np.repeat(dataset_like()[..., None], 3, axis=2)
    colour[..., 0] //= 2  # a tint: grey pixels differ from the array, size unchanged
    assert prepare_image(png(colour)).pixels.shape == (28, 28)
    assert not looks_like_data(png(colour), (28, 28))


def test_full_and_none_modes():
    pixels = dataset_like()
    full = prepare_image(png(pixels), mode="full")  # cropped to the object and resized
    assert full.pixels.shape == (28, 28) and not np.array_equal(full.pixels, pixels)
    light = 255 - pixels
    np.testing.assert_array_equal(prepare_image(png(light), mode="none").pixels, light)
    with pytest.raises(images_module.ImageError, match="model's size"):
        prepare_image(png(np.zeros((40, 40), np.uint8)), mode="none")
    with pytest.raises(ValueError):
        prepare_image(png(pixels), mode="crop")


def test_pictures_tells_files_from_arrays(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(dataset_like()).save(path)
    assert pictures(str(path)) == [str(path)]
    assert pictures([path, png(dataset_like())]) is not None
    assert pictures(np.zeros((2, 28, 28), np.uint8)) is None
    assert pictures([np.zeros((28, 28), np.uint8)]) is None
    assert pictures([]) is None
    prepared = PreparedImage(dataset_like(), False)
    assert pictures(prepared) == [prepared]


def test_original_statistics_tell_a_product_shot_from_a_photograph():
    rng = np.random.default_rng(0)
    shot = photoset.product_shot(dataset_like(), rng).image
    texture = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    s_shot, s_photo = original_statistics(shot), original_statistics(texture)
    assert s_shot.shape == s_photo.shape == (len(STATISTICS),)
    assert s_photo[1] > 10 * s_shot[1]  # border texture
    assert photo_check.logits(s_photo[None])[0] > 0 > photo_check.logits(s_shot[None])[0]
    scores = np.array([1.0, 1.0, 1.0])
    adjusted = photo_check.adjust(scores, "combined", [None, s_shot, s_photo])
    assert adjusted[0] == adjusted[1] == 1.0 and adjusted[2] < -photo_check.PENALTY + 1
    assert photo_check.adjust(scores, "knn", [None, s_shot, s_photo]) is scores


@pytest.mark.parametrize("mode", ["1", "L", "P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "LAB",
                                  "I", "I;16", "F"])
def test_original_statistics_of_every_mode(mode):
    image = Image.new("RGB", (70, 50), (9, 200, 30)).convert(mode)
    stats = original_statistics(image)
    assert stats.shape == (len(STATISTICS),) and np.isfinite(stats).all()


def test_photo_splits_are_fixed_and_disjoint():
    names = [f"wallpaper:W{k}/screenshot" for k in range(200)]
    splits = [photoset.split_of(n) for n in names]
    assert set(splits) == {"fit", "evaluate"}
    assert splits == [photoset.split_of(n) for n in names]  # no state, no seed
    assert (photoset.split_of("wallpaper:W1/screenshot")
            == photoset.split_of("wallpaper:W1/portrait"))
