using Optimum.Models;
using Optimum.Onnx;
using Xunit;

using Optimum.Tests;

namespace Optimum.Cli.Tests;

public sealed class ArtifactTests
{
    [Fact]
    public void CommittedDefaultArtifacts_AreWhatTheGeneratorWrites()
    {
        var tmp = Repo.TempDir();
        try
        {
            foreach (var (name, config) in ModelKinds.Defaults)
            {
                ModelKinds.Write(Path.Combine(tmp, name), config);
                foreach (var file in Directory.GetFiles(Path.Combine(tmp, name)).Select(Path.GetFileName))
                {
                    var committed = Repo.Path("models", name, file!);
                    Assert.True(File.Exists(committed), $"models/{name}/{file} is not committed; run `optimum-net artifacts`.");
                    Assert.True(File.ReadAllBytes(committed).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(tmp, name, file!))),
                        $"models/{name}/{file} is stale: regenerating it changes its bytes; run `optimum-net artifacts`.");
                }
            }
        }
        finally { Directory.Delete(tmp, true); }
    }

    [Fact]
    public void MlpArtifacts_ListParametersInGraphOrder()
    {
        var ps = Artifacts.ReadParameters(Repo.Path("models", "mlp-digits"));
        Assert.Equal(["layers.0.weight", "layers.0.bias", "head.weight", "head.bias"], ps.Select(p => p.Name));
        Assert.Equal([64L, 64L], ps[0].Shape);
        var train = ModelReader.Load(Repo.Path("models", "mlp-digits", Artifacts.TrainingFile));
        Assert.Equal(ps.Select(p => p.Name), train.Parameters.Select(p => p.Name));
        Assert.Equal(["loss", .. ps.Select(p => "grad." + p.Name)], train.Outputs.Select(o => o.Name));
    }

    [Fact]
    public void Initialize_IsSeededAndBoundedLikeTorchLinear()
    {
        var ps = Artifacts.ReadParameters(Repo.Path("models", "mlp-digits"));
        var a = Mlp.Initialize(ps, 5);
        var b = Mlp.Initialize(ps, 5);
        var c = Mlp.Initialize(ps, 6);
        Assert.Equal(a[0], b[0]);
        Assert.NotEqual(a[0], c[0]);
        Assert.All(a[0], w => Assert.InRange(w, -1 / 8f, 1 / 8f));      // fan_in 64
        Assert.All(a[3], w => Assert.InRange(w, -1 / 8f, 1 / 8f));      // head bias: fan_in 64
        Assert.InRange(a[0].Select(Math.Abs).Average(), 0.05, 0.075);   // U(-1/8, 1/8) has E|w| = 1/16
    }

    [Fact]
    public void BadConfigsAndFolders_AreRefusedClearly()
    {
        var e = Assert.Throws<ArgumentException>(() => Mlp.Define(new GraphBuilder(), true, new MlpConfig { Activation = "swish" }));
        Assert.Contains("activation 'swish'", e.Message);
        var tmp = Repo.TempDir();
        try
        {
            Assert.Throws<FileNotFoundException>(() => Artifacts.ReadParameters(tmp));
            File.WriteAllText(Path.Combine(tmp, "config.json"), "{\"model_type\": \"mlp\"}");
            var m = Assert.Throws<InvalidDataException>(() => Artifacts.ReadParameters(tmp));
            Assert.Contains("optimum.parameters", m.Message);
        }
        finally { Directory.Delete(tmp, true); }
    }
}
