using System.IO.Compression;
using Xunit;

using Optimum.Tests;

namespace Optimum.Cli.Tests;

public sealed class MlpDemoTests
{
    [Fact]
    public void TrainMlp_LearnsTheDigitsAndPlotsTheLosses()
    {
        var tmp = Repo.TempDir();
        try
        {
            var o = new MlpDemoOptions(Repo.Path("models", "mlp-digits"), Repo.Path("samples", "data", "digits.csv.gz"), tmp, Epochs: 4, BatchSize: 32, Lr: 0.05f, Momentum: 0.9f, Seed: 0);
            var h = MlpDemo.Train(o, TextWriter.Null);
            Assert.Equal(4, h.Count);
            Assert.True(h[^1].Train < 0.5 * h[0].Train, $"train loss {h[0].Train:F3} -> {h[^1].Train:F3}");
            Assert.True(h[^1].Acc > 0.85, $"validation accuracy {h[^1].Acc:P1}");   // chance is 10%
            var png = File.ReadAllBytes(Path.Combine(tmp, "loss.png"));
            Assert.Equal([0x89, 0x50, 0x4E, 0x47], png.Take(4));
            Assert.Equal(h, MlpDemo.Train(o, TextWriter.Null));                       // seeded: same run, same numbers
        }
        finally { Directory.Delete(tmp, true); }
    }

    [Fact]
    public void Digits_LoadsAllRowsAndRefusesMalformedOnes()
    {
        var d = Digits.Load(Repo.Path("samples", "data", "digits.csv.gz"));
        Assert.Equal(1797, d.Count);
        Assert.Equal(1797 * 64, d.Pixels.Length);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), d.Labels.Distinct().Order());
        var (train, val) = d.Split(0.2, 0);
        Assert.Equal((1438, 359), (train.Count, val.Count));

        var tmp = Repo.TempDir();
        try
        {
            var bad = Path.Combine(tmp, "bad.csv.gz");
            using (var gz = new GZipStream(File.Create(bad), CompressionLevel.Fastest))
            using (var w = new StreamWriter(gz))
                w.Write(string.Join(",", Enumerable.Repeat("0", 65)) + "\n" + string.Join(",", Enumerable.Repeat("3", 64)) + ",12\n");
            var e = Assert.Throws<InvalidDataException>(() => Digits.Load(bad));
            Assert.Contains("bad.csv.gz:2: field 65 is '12'", e.Message);
            Assert.Throws<FileNotFoundException>(() => Digits.Load(Path.Combine(tmp, "missing.csv.gz")));
        }
        finally { Directory.Delete(tmp, true); }
    }
}
