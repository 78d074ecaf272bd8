"""Pair generation: the prologue's rules, determinism, and the pooling itself."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_compare.data import generate_pair_sets
from mnist_compare.data.mnist import raw_dir

DIGEST = "import hashlib,torch;from mnist_compare.data import generate_pair_sets as g;" \
         "print(hashlib.sha256(b''.join(t.numpy().tobytes() for t in g(50, {seed}))).hexdigest())"


def test_shapes_dtypes_and_order(mnist_dir):
    tr_x, tr_y, tr_c, te_x, te_y, te_c = generate_pair_sets(1000, 0)
    for x, y, c in ((tr_x, tr_y, tr_c), (te_x, te_y, te_c)):
        assert x.shape == (1000, 2, 14, 14) and x.dtype == torch.float32
        assert y.shape == (1000,) and y.dtype == torch.long
        assert c.shape == (1000, 2) and c.dtype == torch.long
        assert x.min() >= 0 and x.max() <= 255 and x.max() > 200  # raw pixel scale, not normalised
        assert torch.equal(y, (c[:, 0] <= c[:, 1]).long())  # 1 iff first digit <= second
        assert 0.45 < y.float().mean() < 0.65  # P(a <= b) = 0.55 for uniform digits
    assert not torch.equal(tr_x, te_x)


def test_train_pairs_from_train_set_test_pairs_from_test_set(mnist_dir):
    tr_x, _, _tr_c, te_x, _, te_c = generate_pair_sets(20, 3)
    raw = raw_dir(mnist_dir)
    train_img = read_image_file(str(raw / "train-images-idx3-ubyte")).float()
    test_img = read_image_file(str(raw / "t10k-images-idx3-ubyte")).float()
    test_lab = read_label_file(str(raw / "t10k-labels-idx1-ubyte"))
    # hand-computed 2x2 average of the first test pair's first image, found in the test set
    pooled_test = (test_img[:, 0::2, 0::2] + test_img[:, 1::2, 0::2] + test_img[:, 0::2, 1::2]
                   + test_img[:, 1::2, 1::2]) / 4
    match = (pooled_test == te_x[0, 0]).flatten(1).all(1).nonzero().flatten()
    assert len(match) >= 1 and test_lab[match[0]] == te_c[0, 0]
    pooled_train = (train_img[:, 0::2, 0::2] + train_img[:, 1::2, 0::2] + train_img[:, 0::2, 1::2]
                    + train_img[:, 1::2, 1::2]) / 4
    assert (pooled_train == tr_x[0, 1]).flatten(1).all(1).any()
    assert not (pooled_test == tr_x[0, 1]).flatten(1).all(1).any()


def test_pooling_matches_a_hand_computation(mnist_dir):
    raw = raw_dir(mnist_dir)
    image = read_image_file(str(raw / "train-images-idx3-ubyte"))[0].tolist()
    from mnist_compare.data.mnist import load_pooled

    pooled = load_pooled(str(mnist_dir))["train_input"][0]
    for i, j in ((0, 0), (7, 7), (5, 9), (13, 13)):
        block = [image[2 * i][2 * j], image[2 * i + 1][2 * j], image[2 * i][2 * j + 1], image[2 * i + 1][2 * j + 1]]
        assert pooled[i, j].item() == sum(block) / 4


@pytest.mark.slow
def test_same_seed_same_tensors_in_another_process(mnist_dir):
    here = generate_pair_sets(50, 7)
    import hashlib

    mine = hashlib.sha256(b"".join(t.numpy().tobytes() for t in here)).hexdigest()
    other = subprocess.run([sys.executable, "-c", DIGEST.format(seed=7)], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == mine


def test_seeds_differ_seed_zero_is_real_and_global_rng_untouched(mnist_dir):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = generate_pair_sets(100, 0), generate_pair_sets(100, 1)
    assert torch.equal(torch.get_rng_state(), before)
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[3], b[3])
    assert all(torch.equal(x, y) for x, y in zip(a, generate_pair_sets(100, 0), strict=False))


def test_pairs_come_from_the_data_dir_asked_for(tmp_path, mnist_dir, monkeypatch):
    """`data.data_dir` reaches the loader (else a run would silently use the default cache)."""
    from mnist_compare.data import mnist, pairs

    asked = []
    monkeypatch.setattr(pairs, "load_pooled", lambda where: asked.append(where) or mnist.load_pooled(None))
    generate_pair_sets(5, 0, tmp_path / "mine")
    generate_pair_sets(5, 0)
    assert asked == [str(tmp_path / "mine"), None]


def test_a_fixed_test_set_is_the_same_whatever_the_training_size(mnist_dir):
    """data.test_pairs fixes the test pairs of a seed across training sizes, and the training pairs
    of a smaller size are the first of a larger one's: a size sweep compares like with like."""
    small = generate_pair_sets(250, 4, test_pairs=1000)
    large = generate_pair_sets(4000, 4, test_pairs=1000)
    protocol = generate_pair_sets(1000, 4)
    assert small[0].shape[0] == 250 and large[0].shape[0] == 4000 and small[3].shape[0] == 1000
    for i in range(3):
        assert torch.equal(small[i], large[i][:250])  # nested training pairs
        assert torch.equal(small[3 + i], large[3 + i]) and torch.equal(large[3 + i], protocol[3 + i])
    assert generate_pair_sets(4000, 4)[3].shape[0] == 4000  # null: as many test pairs as training pairs


@pytest.mark.parametrize(("n_pairs", "test_pairs", "words"), [
    (5001, None, "data.test_pairs=1000 fixes the test set"),  # the protocol's test set cannot grow so far
    (30001, 1000, "from 1 to 30000"), (1000, 5001, "data.test_pairs=5001"), (1000, 0, "data.test_pairs=0"),
    (0, 1000, "data.n_pairs=0"),
])
def test_sizes_beyond_mnist_are_refused_with_the_way_out(n_pairs, test_pairs, words):
    from mnist_compare.errors import UserError

    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        generate_pair_sets(n_pairs, 0, test_pairs=test_pairs)
    assert generate_pair_sets(30000, 0, test_pairs=5000)[0].shape[0] == 30000


def test_a_size_refused_says_which_mnist_set_limits_it():
    from mnist_compare.data.pairs import check_n_pairs
    from mnist_compare.errors import UserError

    test_set = "the MNIST test set has 10,000 images, two per pair"
    expected = {
        (5001, None): f"data.n_pairs=5001 is not allowed: use an integer from 1 to 5000 ({test_set}), e.g. "
                      "data.n_pairs=1000; data.test_pairs=1000 fixes the test set and allows up to 30000 "
                      "training pairs",
        (0, None): f"data.n_pairs=0 is not allowed: use an integer from 1 to 5000 ({test_set}), e.g. data.n_pairs=1000",
        (30001, 1000): "data.n_pairs=30001 is not allowed: use an integer from 1 to 30000 (the MNIST training set "
                       "has 60,000 images, two per pair), e.g. data.n_pairs=1000",
        (1000, 5001): f"data.test_pairs=5001 is not allowed: use an integer from 1 to 5000 ({test_set}), e.g. "
                      "data.test_pairs=1000",
    }
    for (n_pairs, test_pairs), message in expected.items():
        with pytest.raises(UserError) as refused:
            check_n_pairs(n_pairs, test_pairs)
        assert str(refused.value) == message
    for n_pairs, test_pairs in ((5000, None), (1, None), (30000, 5000), (1, 1)):
        check_n_pairs(n_pairs, test_pairs)  # the edges themselves are allowed
