using Optimum.Hub.Lora;
using Optimum.Onnx.Lora;
using Optimum.Tests;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Onnx;

namespace Optimum.Models.Tests;

/// <summary>A model definition with and without LoRA, its weights by name, and runs of either graph through ORT.</summary>
internal sealed class LoraHarness
{
    public LoraHarness(object config, Func<GraphBuilder, bool, ModelOutputs> define, LoraConfig lora, DType type = DType.Float, int seed = 0)
    {
        Type = type;
        Define = define;
        Lora = lora;
        Base = TrainingGraph.BuildEval("base", define);
        Adapted = TrainingGraph.BuildEval("lora", LoraGraph.Apply(define, lora));
        Modules = LoraGraph.Modules(Adapted);
        BaseParameters = Base.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.ToStatic())).ToArray();
        BaseWeights = ModelKinds.Initialize(BaseParameters, config, seed);
    }

    public DType Type { get; }
    public Func<GraphBuilder, bool, ModelOutputs> Define { get; }
    public LoraConfig Lora { get; }
    public GraphBuilder Base { get; }
    public GraphBuilder Adapted { get; }
    public IReadOnlyList<LoraModule> Modules { get; }
    public IReadOnlyList<ParameterInfo> BaseParameters { get; }
    public float[][] BaseWeights { get; }

    /// <summary>The adapter with A ~ U(−1/√in, 1/√in) (PEFT's init) and B ~ N(0, <paramref name="bStd"/>²) (0: PEFT's zeros).</summary>
    public LoraAdapter Adapter(int seed, double bStd)
    {
        var init = LoraAdapter.Initialize(Lora, Modules, seed);
        var rng = new Random(seed + 1);
        return LoraAdapter.Create(Lora, Modules, Modules.Select((_, i) => init.A(i)).ToArray(),
            Modules.Select(m => HfWeights.Normal(rng, m.Out * Lora.R, bStd)).ToArray());
    }

    public static Dictionary<string, double[]> Run(GraphBuilder graph, IEnumerable<(string Name, float[] Values)> weights, Dictionary<string, HostTensor> batch, DType type,
        IEnumerable<string>? outputs = null)
    {
        var byName = weights.ToDictionary(w => w.Name, w => w.Values);
        var feeds = new Dictionary<string, HostTensor>(batch);
        foreach (var p in graph.Parameters)
            feeds[p.Name] = new HostTensor(byName[p.Name].Select(v => (double)v).ToArray(), p.Shape.ToStatic(), type);
        using var m = new OrtModel(graph);
        return m.Run(feeds, outputs);
    }

    public IEnumerable<(string, float[])> Named(float[][] baseWeights) => BaseParameters.Select((p, i) => (p.Name, baseWeights[i]));

    public static IEnumerable<(string, float[])> Named(LoraAdapter a) => a.Tensors.Select(t => (t.Parameter.Name, t.Values));

    public Dictionary<string, double[]> RunBase(Dictionary<string, HostTensor> batch, float[][]? weights = null) =>
        Run(Base, Named(weights ?? BaseWeights), batch, Type);

    public Dictionary<string, double[]> RunAdapted(Dictionary<string, HostTensor> batch, LoraAdapter adapter) =>
        Run(Adapted, Named(BaseWeights).Concat(Named(adapter)), batch, Type);

    public static HostTensor Ids(long[] values, params long[] dims) => new(values.Select(v => (double)v).ToArray(), dims, DType.Int64);
}
