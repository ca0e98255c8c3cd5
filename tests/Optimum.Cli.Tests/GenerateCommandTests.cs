using Optimum.Core;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>
/// generate fails in one line with exit 1 and prints nothing else when the model is broken (it printed garbage and
/// exited 0) or an option is out of range (it echoed the prompt first and named options as HF does).
/// </summary>
public sealed class GenerateCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>A 1-layer GPT-2 with the BPE vocabulary whose token embeddings are replaced by <paramref name="embedding"/>(index).</summary>
    private string Model(string name, Func<int, float> embedding)
    {
        var dir = Path.Combine(_dir, name);
        ModelKinds.WritePreset(dir, new Gpt2Config { VocabSize = 50257, NPositions = 16, NEmbd = 8, NLayer = 1, NHead = 2 }, seed: 0);
        var ps = ModelFolder.ReadParameters(dir);
        var path = Path.Combine(dir, ModelFolder.WeightsFile);
        var w = HfWeights.Load(path, ps, out _);
        int wte = ps.Select(p => p.Name).ToList().FindIndex(n => n.EndsWith("wte.weight", StringComparison.Ordinal));
        for (int i = 0; i < w[wte].Length; i++) w[wte][i] = embedding(i);
        HfWeights.Save(path, ps, w);
        return dir;
    }

    [Fact]
    public void WeightsHoldingNaN_AreRefusedAtLoad_NamingTheTensor()
    {
        var dir = Model("nan", i => i == 12345 ? float.NaN : 0.01f * (i % 7));
        var (code, stdout, stderr) = CliProcess.RunWithOutput($"generate --model {dir} --prompt Hello --max-new-tokens 3", output);
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Contains("wte.weight' holds NaN at element 12345", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    /// <summary>Finite weights whose products overflow float32: the logits are not finite, generation stops with an error.</summary>
    [Theory]
    [InlineData("")]
    [InlineData("--stream")]
    public void LogitsThatAreNotFinite_StopGeneration(string stream)
    {
        var dir = Model("overflow", i => (i % 2 == 0 ? 1 : -1) * 3e38f);
        var (code, stdout, stderr) = CliProcess.RunWithOutput($"generate --model {dir} --prompt Hello --max-new-tokens 3 {stream}", output);
        Assert.Equal(1, code);
        Assert.Contains("The model's logits hold", stderr);
        Assert.Contains("generation stopped", stderr);
        Assert.Equal(stream == "" ? "" : "Hello", stdout);                  // streaming had echoed the prompt, nothing more
    }

    [Theory]
    [InlineData("--top-p 0", "--top-p 0 must be in (0, 1]")]
    [InlineData("--max-new-tokens 0", "--max-new-tokens 0 must be >= 1")]
    [InlineData("--temperature -1", "--temperature -1 must be in [0, 100]")]
    [InlineData("--num-beams 65", "--num-beams 65 must be in [1, 64]")]
    [InlineData("--max-new-tokens 40", "with --max-new-tokens 40 that exceeds the model's context of 16 tokens")]
    public void OptionsOutOfRange_AreNamedAsFlags_BeforeAnythingIsPrinted(string flag, string expected)
    {
        var dir = Model("ok", i => 0.01f * (i % 7));
        var (code, stdout, stderr) = CliProcess.RunWithOutput($"generate --model {dir} --prompt Hello {flag}", output);
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}
