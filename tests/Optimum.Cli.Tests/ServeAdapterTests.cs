using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>serve --adapter: a malformed spec and a base that is not served are one-line errors, exit 1, before "serving".</summary>
public sealed class ServeAdapterTests(ITestOutputHelper output)
{
    [Fact]
    public void Adapter_WithUnknownBase_OrMalformed_IsAOneLineError()
    {
        var dir = Repo.TempDir();
        try
        {
            var model = Path.Combine(dir, "gpt2");
            Optimum.Models.ModelKinds.WritePreset(model, new Optimum.Core.Gpt2Config { VocabSize = 50257, NPositions = 16, NEmbd = 8, NLayer = 1, NHead = 2 }, seed: 0);
            var adapter = Path.Combine(dir, "adapter");
            Directory.CreateDirectory(adapter);
            foreach (var (flag, expected) in new[]
            {
                ($"--adapter pirate={adapter}@gpt3", "Optimum:Adapters:0 ('pirate'): its base 'gpt3' is not a served model (served: gpt2)"),
                ($"--adapter pirate={adapter}", $"--adapter: Adapter 'pirate={adapter}' is not name=folder@base"),
                ($"--adapter pirate={adapter}@gpt2", $"Adapter 'pirate' ('{adapter}') over 'gpt2' cannot be served: {Path.Combine(adapter, "adapter_config.json")}: no adapter config"),
            })
            {
                var (code, stdout, stderr) = CliProcess.RunWithOutput($"serve --model {model} {flag} --urls http://127.0.0.1:0 --threads 1", output);
                Assert.Equal(1, code);
                Assert.Contains(expected, stderr);
                Assert.Single(stderr.Trim().Split('\n'));
                Assert.DoesNotContain("serving", stdout);
            }
        }
        finally { Directory.Delete(dir, true); }
    }
}
