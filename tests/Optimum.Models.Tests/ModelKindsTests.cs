using Optimum.Core;
using Optimum.Models;
using Optimum.Tests;
using Xunit;

namespace Optimum.Models.Tests;

/// <summary>The registry: one kind per model_type, typed configs that survive their own folder, clear refusals.</summary>
public sealed class ModelKindsTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    public static TheoryData<string> Configs => ["gpt2", "t5", "informer", "time_series_transformer", "mlp"];

    private static object Config(string type) => type switch
    {
        "gpt2" => new Gpt2Config { VocabSize = 61, NPositions = 16, NEmbd = 16, NLayer = 1, NHead = 2 },
        "t5" => new T5Config { VocabSize = 40, DModel = 16, DKv = 4, DFf = 32, NumLayers = 1, NumDecoderLayers = 1, NumHeads = 2 },
        "mlp" => new MlpConfig { HiddenSizes = [8] },
        _ => TimeSeriesConfig.Monthly(type, seriesCount: 3),
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void EveryKind_ReadsBackTheFolderItWrites(string type)
    {
        var config = Config(type);
        var dir = Path.Combine(_dir, type);
        ModelKinds.WritePreset(dir, config, seed: 3);
        var (kind, read) = ModelKinds.Read(dir);
        Assert.Contains(type, kind.ModelTypes);
        Assert.Same(kind, ModelKinds.For(config));
        Assert.Equal(kind.ToHf(config).ToJsonString(), kind.ToHf(read).ToJsonString());
        var ps = ModelFolder.ReadParameters(dir);
        var a = ModelKinds.InitialWeights(dir, seed: 99);                         // the folder's model.safetensors, not seed 99
        var b = ModelKinds.Initialize(ps, config, seed: 3);
        Assert.Equal(b.Length, a.Length);
        for (int i = 0; i < a.Length; i++) Assert.Equal(b[i], a[i]);
    }

    [Fact]
    public void UnknownOrMissingModelType_IsRefusedNamingTheFileAndTheKnownTypes()
    {
        File.WriteAllText(Path.Combine(_dir, "config.json"), "{\"model_type\": \"bert\"}");
        var e = Assert.Throws<InvalidDataException>(() => ModelKinds.Read(_dir));
        Assert.Contains(Path.Combine(_dir, "config.json"), e.Message);
        Assert.Contains("'bert' is not a known model kind (known: gpt2, t5, time_series_transformer, informer, mlp)", e.Message);
        File.WriteAllText(Path.Combine(_dir, "config.json"), "{}");
        Assert.Contains("model_type is missing", Assert.Throws<InvalidDataException>(() => ModelKinds.Read(_dir)).Message);
        Assert.Throws<ArgumentException>(() => ModelKinds.For(new object()));
    }

    [Fact]
    public void KindsWithoutALoader_SayWhatTheyCannotDo()
    {
        var dir = Path.Combine(_dir, "mlp");
        ModelKinds.WritePreset(dir, new MlpConfig(), seed: 0);
        var e = Assert.Throws<NotSupportedException>(() => ModelKinds.Load(dir));
        Assert.Contains("mlp models have no inference loader", e.Message);
    }
}
