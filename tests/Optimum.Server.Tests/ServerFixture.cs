using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Optimum.Core;

namespace Optimum.Server.Tests;

/// <summary>
/// The server tests run one at a time: the service's OpenTelemetry meter has one name per process, so
/// two live servers would see each other's counts in /metrics.
/// </summary>
[CollectionDefinition(ModelFixture.Collection)]
public sealed class ServerCollection : ICollectionFixture<ModelFixture>;

/// <summary>A small GPT-2 with GPT-2's vocabulary (random weights) in a model folder, shared by the tests.</summary>
public sealed class ModelFixture : IDisposable
{
    public const string Collection = "server";

    public ModelFixture()
    {
        Root = Repo.TempDir();
        Dir = Path.Combine(Root, "tiny-gpt2");
        ModelKinds.WritePreset(Dir, new Gpt2Config
        {
            VocabSize = 50257, NPositions = 128, NEmbd = 8, NLayer = 1, NHead = 2, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0, InitializerRange = 0.5,
        }, seed: 2);
        SlowDir = Path.Combine(Root, "slow-gpt2");
        ModelKinds.WritePreset(SlowDir, new Gpt2Config
        {
            VocabSize = 50257, NPositions = 1024, NEmbd = 64, NLayer = 4, NHead = 2, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0,
        }, seed: 3);
    }

    /// <summary>A T5 with a symbol vocabulary (letters in, phoneme symbols out), random weights.</summary>
    public string T5Dir { get; } = MakeT5();

    private static string MakeT5()
    {
        var dir = Path.Combine(Repo.TempDir(), "tiny-t5");
        var tok = Optimum.Hub.SymbolTokenizer.Build([("cat", "K AE T"), ("dog", "D AO G")]);
        ModelKinds.WritePreset(dir, new T5Config
        {
            VocabSize = tok.VocabSize, DModel = 16, DKv = 4, NumHeads = 2, DFf = 32, NumLayers = 1, NumDecoderLayers = 1, RelativeAttentionNumBuckets = 8,
            RelativeAttentionMaxDistance = 16, MaxLength = 24, DropoutRate = 0,
        }, seed: 1);
        tok.Save(dir);
        return dir;
    }

    /// <summary>A model slow enough (about a millisecond per token) to disconnect from or shut down under.</summary>
    public string SlowDir { get; }

    public string Root { get; }
    public string Dir { get; }

    /// <summary>A test server over the model with the given "Optimum:*" settings.</summary>
    public WebApplicationFactory<Program> Factory(params (string Key, string Value)[] settings) =>
        new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Optimum:Models:0", Dir);
            b.UseSetting("Optimum:Threads", "1");
            foreach (var (k, v) in settings) b.UseSetting("Optimum:" + k, v);
        });

    public void Dispose() => Directory.Delete(Root, true);
}
