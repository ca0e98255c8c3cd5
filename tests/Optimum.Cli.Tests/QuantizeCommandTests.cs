using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary><c>optimum-net quantize</c> as a process: refusals name what is wrong; its output folder generates through <c>generate</c>.</summary>
public sealed class QuantizeCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Quantize_RefusesBadInput_AndWritesNothing()
    {
        var outDir = Path.Combine(_dir, "q");
        var missing = Path.Combine(_dir, "missing");
        var (code, err) = CliProcess.Run($"quantize {missing} -o {outDir} --weights int4", output);
        Assert.Equal((1, true), (code, err.Contains($"Model folder '{missing}' does not exist")));
        var mini = Repo.Path("models", "gpt2-mini");
        (code, err) = CliProcess.Run($"quantize {mini} -o {outDir} --weights int3", output);
        Assert.Equal((1, true), (code, err.Contains("--weights: 'int3' is not a supported precision")));
        (code, err) = CliProcess.Run($"quantize {mini} -o {outDir} --weights int4 --block-size 24", output);
        Assert.Equal((1, true), (code, err.Contains("power of two >= 16") && err.Contains("got 24")));
        (code, err) = CliProcess.Run($"quantize {mini} -o {outDir} --weights int8 --int8-operator fast", output);
        Assert.Equal((1, true), (code, err.Contains("--int8-operator: 'fast'")));
        (code, err) = CliProcess.Run($"quantize {mini} -o {outDir} --weights int4", output);              // graphs and config, no weights
        Assert.Equal((1, true), (code, err.Contains("has no model.safetensors")));
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void QuantizedPreset_GeneratesThroughTheGenerateCommand()
    {
        var f32 = Path.Combine(_dir, "f32");
        var q = Path.Combine(_dir, "q");
        Assert.Equal(0, CliProcess.Run($"export --preset gpt2-mini -o {f32}", output).Code);
        var (code, stdout, _) = CliProcess.RunWithOutput($"quantize {f32} -o {q} --weights int4 --block-size 64", output);
        Assert.Equal(0, code);
        Assert.Contains("(int4, block 64, zero points, MatMulNBits)", stdout);
        (code, stdout, _) = CliProcess.RunWithOutput($"generate --model {q} --prompt \"Call me\" --max-new-tokens 4 --temperature 0", output);
        Assert.Equal(0, code);
        Assert.StartsWith("Call me", stdout);
        Assert.True(stdout.TrimEnd().Length > "Call me".Length, stdout);
    }
}
