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

/// <summary>mpi-check refuses a chunk that would never advance through a buffer (it hung).</summary>
public sealed class MpiCheckArgumentsTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("0")]
    [InlineData("-5")]
    public void ZeroOrNegativeChunk_IsAnError(string chunk)
    {
        var (code, stderr) = CliProcess.Run($"mpi-check --chunk {chunk}", output);
        Assert.Equal(1, code);
        Assert.Contains($"--chunk {chunk} must be at least 1", stderr);
    }
}

/// <summary>serve's start-up failures are one line and exit 1, before "serving" is printed.</summary>
public sealed class ServeStartupTests(ITestOutputHelper output)
{
    [Fact]
    public void PortInUse_AndBadUrls_AreOneLineErrors()
    {
        var dir = Repo.TempDir();
        try
        {
            var model = Path.Combine(dir, "unet");
            Optimum.Models.ModelKinds.WritePreset(model, new Optimum.Core.UNet2DConfig
            {
                SampleSize = 8, InChannels = 1, OutChannels = 1, BlockOutChannels = [8], LayersPerBlock = 1, NormNumGroups = 4,
                DownBlockTypes = ["DownBlock2D"], UpBlockTypes = ["UpBlock2D"],
            }, seed: 0);
            using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
            taken.Start();
            int port = ((System.Net.IPEndPoint)taken.LocalEndpoint).Port;
            foreach (var (urls, expected) in new[]
            {
                ($"http://127.0.0.1:{port}", "address already in use"),
                ("garbage", "--urls 'garbage' is not a usable address"),
                ("http://127.0.0.1:99999", "--urls 'http://127.0.0.1:99999' is not a usable address"),
            })
            {
                var (code, stderr) = CliProcess.Run($"serve --model {model} --urls {urls} --threads 1", output);
                Assert.Equal(1, code);
                Assert.Contains(expected, stderr);
                Assert.Single(stderr.Trim().Split('\n'));
            }
        }
        finally { Directory.Delete(dir, true); }
    }
}
