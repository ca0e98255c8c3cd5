using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>train refuses counts it cannot use with one line naming the flag, before reading any data.</summary>
public sealed class TrainArgumentsTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("--ranks 0", "--ranks 0 must be at least 1")]
    [InlineData("--ranks -2", "--ranks -2 must be at least 1")]
    [InlineData("--threads -1", "--threads -1 must be >= 0")]
    [InlineData("--stop-after 0", "--stop-after 0 must be at least 1 update")]
    [InlineData("--stop-after -1", "--stop-after -1 must be at least 1 update")]
    public void BadCounts_AreOneLineErrors(string flag, string expected)
    {
        var model = Repo.Path("models", "mlp-digits");
        var (code, stderr) = CliProcess.Run($"train --model {model} --data {Repo.Path("samples", "data", "digits.csv.gz")} --out {Path.Combine(Path.GetTempPath(), "never-" + Guid.NewGuid().ToString("N"))} {flag}", output);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}
