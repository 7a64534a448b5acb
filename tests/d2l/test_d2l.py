"""`lenet.d2l`: the book's API on lenet's machinery (unit tests on synthetic data)."""

import pytest
import torch
from conftest import synthetic_split
from torch import nn

from lenet import d2l
from lenet.data.loader import Batches


@pytest.fixture(autouse=True)
def plots_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_D2L_PLOTS", str(tmp_path / "plots"))
    return tmp_path / "plots"


def synthetic_batches(n: int, batch_size: int, shuffle: bool, seed: int = 0) -> Batches:
    images, labels = synthetic_split(n, seed)
    x = torch.from_numpy(images).unsqueeze(1).float() / 255
    return Batches(x, torch.from_numpy(labels).long(), batch_size=batch_size, shuffle=shuffle)


class SyntheticData(d2l.DataModule):
    def __init__(self, batch_size=32):
        super().__init__()
        self.save_hyperparameters()
        images, labels = synthetic_split(320, 0)
        self.X = torch.from_numpy(images).unsqueeze(1).float() / 255
        self.y = torch.from_numpy(labels).long()

    def get_dataloader(self, train):
        i = slice(0, 256) if train else slice(256, None)
        return self.get_tensorloader((self.X, self.y), train, i)


def test_save_hyperparameters_and_add_to_class():
    class B(d2l.HyperParameters):
        def __init__(self, a, b=2, _hidden=3):
            self.save_hyperparameters(ignore=["b"])

    obj = B(1)
    assert obj.a == 1 and obj.hparams == {"a": 1} and not hasattr(obj, "b")

    @d2l.add_to_class(B)
    def double(self):
        return 2 * self.a

    assert obj.double() == 2


def test_small_helpers():
    acc = d2l.Accumulator(2)
    acc.add(1, torch.tensor(2.0))
    acc.add(3, 4)
    assert acc[0] == 4 and acc[1] == 6.0
    acc.reset()
    assert acc[0] == 0
    timer = d2l.Timer()
    timer.stop()
    assert timer.sum() >= 0 and len(timer.cumsum()) == 1
    y_hat = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert d2l.accuracy(y_hat, torch.tensor([1, 0, 0])) == 2.0
    assert d2l.size(torch.zeros(3, 4)) == 12
    assert d2l.get_fashion_mnist_labels([0, 9]) == ["t-shirt", "ankle boot"]
    assert d2l.try_gpu() == d2l.cpu() or torch.cuda.is_available()


def test_lenet_layer_summary_prints_the_books_lines(capsys):
    model = d2l.LeNet()
    model.layer_summary((1, 1, 28, 28))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Conv2d output shape:\t torch.Size([1, 6, 28, 28])"
    assert lines[5] == "AvgPool2d output shape:\t torch.Size([1, 16, 5, 5])"
    assert lines[-1] == "Linear output shape:\t torch.Size([1, 10])"


@pytest.mark.slow
def test_trainer_fits_a_lazy_model_and_writes_its_plot(capsys, plots_dir):
    class Lazy(d2l.Classifier):
        def __init__(self, lr=0.05):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.LazyConv2d(4, kernel_size=5, padding=2), nn.ReLU(),
                                     nn.AvgPool2d(2, 2), nn.Flatten(), nn.LazyLinear(10))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    data = SyntheticData()
    model = Lazy()
    model.apply_init([next(iter(data.get_dataloader(True)))[0]], d2l.init_cnn)
    trainer = d2l.Trainer(max_epochs=4, num_gpus=8)  # more GPUs than exist: uses what exists
    trainer.fit(model, data)
    assert trainer.gpus == [] or torch.cuda.is_available() or trainer.gpus[0].type == "mps"
    X, y = next(iter(data.val_dataloader()))
    assert model.accuracy(model(X), y) > 0.5
    pngs = list(plots_dir.glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000
    assert capsys.readouterr().out.count("plot: ") == 1  # the path is printed once
    assert set(model.board.data) == {"train_loss", "val_loss", "val_acc"}


@pytest.mark.slow
def test_gradient_clipping_bounds_every_steps_gradient(monkeypatch):
    """The book's `gradient_clip_val`: each step's gradient norm at most the value (and the
    same run unclipped goes over it, so the bound is the clipping's doing)."""
    norms: list[float] = []
    real_step = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    torch.manual_seed(0)
    d2l.Trainer(max_epochs=1).fit(d2l.LeNet(lr=0.1), SyntheticData())
    unclipped, norms[:] = list(norms), []
    torch.manual_seed(0)
    d2l.Trainer(max_epochs=1, gradient_clip_val=0.05).fit(d2l.LeNet(lr=0.1), SyntheticData())
    assert len(norms) == len(unclipped) == 8  # 256 examples, batches of 32
    assert max(unclipped) > 0.05 and max(norms) <= 0.05 * (1 + 1e-5), (unclipped, norms)


@pytest.mark.slow
def test_train_ch6_with_fewer_than_five_batches(capsys, plots_dir):
    net = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 14 * 14, 10))
    train = synthetic_batches(96, batch_size=32, shuffle=True)  # 3 batches: the book's // 5 is 0
    test = synthetic_batches(64, batch_size=32, shuffle=False, seed=1)
    d2l.train_ch6(net, train, test, num_epochs=3, lr=0.5, device=d2l.cpu())
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "training on cpu"
    assert out[-2].startswith("loss ") and ", train acc " in out[-2] and ", test acc " in out[-2]
    assert out[-1].endswith("examples/sec on cpu")
    assert len(list(plots_dir.glob("*.png"))) == 1


def test_evaluate_accuracy_gpu_on_any_iterable():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.rand(10, 1, 28, 28), torch.zeros(10).long()),
        batch_size=4)
    acc = d2l.evaluate_accuracy_gpu(net, loader)
    assert 0.0 <= acc <= 1.0


def test_batches_reshuffle_on_each_iteration_like_a_dataloader():
    batches = synthetic_batches(64, batch_size=64, shuffle=True)
    first, second = (next(iter(batches))[1] for _ in range(2))
    assert not torch.equal(first, second)


def test_show_images_writes_a_figure(plots_dir):
    axes = d2l.show_images(torch.rand(4, 28, 28), 1, 4, titles=list("abcd"))
    assert len(axes) == 4 and len(list(plots_dir.glob("*.png"))) == 1


def test_progress_board_without_labels_plots_its_points(plots_dir):
    board = d2l.ProgressBoard()  # no xlabel: the book's code fails here at the first plot
    for x in range(4):
        board.draw(x, torch.tensor(float(x)), "loss", every_n=2)
    board.finish()
    axes = board.fig.axes[0]
    assert axes.get_xlabel() == "x"
    assert [list(line.get_ydata()) for line in axes.get_lines()] == [[0.5, 2.5]]
    assert len(list(plots_dir.glob("*.png"))) == 1
