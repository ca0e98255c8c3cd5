using Optimum.Core;
using Optimum.Onnx;
using Optimum.Onnx.Lora;

namespace Optimum.Hub.Lora;

/// <summary>
/// A LoRA adapter's weights: A (r, in) and B (out, r) of each adapted module, in the order of
/// <see cref="LoraGraph.Modules"/>. Creates them (PEFT's initialisation), merges them into base weights and back, and
/// reads and writes PEFT's files (<see cref="Save"/>, <see cref="Load"/>). The arrays are the adapter's own: a trainer may bind and
/// update them in place.
/// </summary>
public sealed partial class LoraAdapter
{
    private readonly float[][] _a, _b;

    private LoraAdapter(LoraConfig config, IReadOnlyList<LoraModule> modules, float[][] a, float[][] b)
    {
        Config = config;
        Modules = modules;
        _a = a;
        _b = b;
    }

    public LoraConfig Config { get; }
    public IReadOnlyList<LoraModule> Modules { get; }
    /// <summary>A of module i, (r, In) row-major.</summary>
    public float[] A(int i) => _a[i];
    /// <summary>B of module i, (Out, r) row-major.</summary>
    public float[] B(int i) => _b[i];

    /// <summary>The adapter's tensors as graph parameters (A then B of each module, graph names) and their values, in that order.</summary>
    public IReadOnlyList<(ParameterInfo Parameter, float[] Values)> Tensors => Modules.SelectMany((m, i) => new[]
    {
        (new ParameterInfo(m.AName, [Config.R, m.In]), _a[i]),
        (new ParameterInfo(m.BName, [m.Out, Config.R]), _b[i]),
    }).ToArray();

    /// <summary>
    /// PEFT's initialisation (init_lora_weights = true): A by torch's kaiming_uniform_(a = √5), i.e. U(−1/√in, 1/√in),
    /// B zeros, so the adapted model starts equal to the base. One <c>new Random(seed)</c> draws A of each module in
    /// module order, row-major (the values differ from torch's generator; the distribution is the same).
    /// </summary>
    public static LoraAdapter Initialize(LoraConfig config, IReadOnlyList<LoraModule> modules, int seed)
    {
        config.Validate();
        var rng = new Random(seed);
        var a = modules.Select(m =>
        {
            double bound = 1 / Math.Sqrt(m.In);
            var v = new float[config.R * m.In];
            for (int k = 0; k < v.Length; k++) v[k] = (float)((2 * rng.NextDouble() - 1) * bound);
            return v;
        }).ToArray();
        return new LoraAdapter(config, modules, a, modules.Select(m => new float[m.Out * config.R]).ToArray());
    }

    /// <summary>An adapter of given values (copied); a wrong length is refused naming the module.</summary>
    public static LoraAdapter Create(LoraConfig config, IReadOnlyList<LoraModule> modules, IReadOnlyList<float[]> a, IReadOnlyList<float[]> b)
    {
        config.Validate();
        if (a.Count != modules.Count || b.Count != modules.Count)
            throw new ArgumentException($"{a.Count} A and {b.Count} B arrays for {modules.Count} LoRA modules.");
        for (int i = 0; i < modules.Count; i++)
        {
            var m = modules[i];
            if (a[i].LongLength != config.R * m.In) throw new ArgumentException($"'{m.AName}' has {a[i].Length} values, (r, in) = ({config.R}, {m.In}) needs {config.R * m.In}.", nameof(a));
            if (b[i].LongLength != m.Out * config.R) throw new ArgumentException($"'{m.BName}' has {b[i].Length} values, (out, r) = ({m.Out}, {config.R}) needs {m.Out * config.R}.", nameof(b));
        }
        return new LoraAdapter(config, modules, a.Select(x => x.ToArray()).ToArray(), b.Select(x => x.ToArray()).ToArray());
    }

    /// <summary>Trainable values the adapter adds: Σ r · (in + out).</summary>
    public long ParameterCount => Modules.Sum(m => m.ParameterCount(Config.R));

    /// <summary>
    /// Merges the adapter into base weights in place: W += scaling · B·A, in W's layout ((out, in), or (in, out) transposed
    /// for fan_in_fan_out). <paramref name="weights"/> are in <paramref name="parameters"/>' order (a model folder's);
    /// the merged model needs no LoRA graph. A missing base weight or a wrong shape is refused naming it.
    /// </summary>
    public void Merge(IReadOnlyList<ParameterInfo> parameters, float[][] weights) => AddDelta(parameters, weights, Config.Scaling);

    /// <summary>Undoes <see cref="Merge"/>: W −= scaling · B·A (exact up to float rounding of the two updates).</summary>
    public void Unmerge(IReadOnlyList<ParameterInfo> parameters, float[][] weights) => AddDelta(parameters, weights, -Config.Scaling);

    private void AddDelta(IReadOnlyList<ParameterInfo> parameters, float[][] weights, double scale)
    {
        if (weights.Length != parameters.Count) throw new ArgumentException($"{weights.Length} weight arrays for {parameters.Count} parameters.", nameof(weights));
        var index = parameters.Select((p, i) => (p.Name, i)).ToDictionary(x => x.Name, x => x.i, StringComparer.Ordinal);
        int r = Config.R;
        for (int mi = 0; mi < Modules.Count; mi++)
        {
            var m = Modules[mi];
            if (!index.TryGetValue(m.WeightName, out var wi))
                throw new ArgumentException($"LoRA module '{m.Name}' has no base weight '{m.WeightName}' among the {parameters.Count} parameters.", nameof(parameters));
            if (!parameters[wi].Shape.SequenceEqual(m.WeightShape) || weights[wi].LongLength != m.In * m.Out)
                throw new ArgumentException($"Base weight '{m.WeightName}' is [{string.Join(", ", parameters[wi].Shape)}] ({weights[wi].Length} values); LoRA module '{m.Name}' needs [{string.Join(", ", m.WeightShape)}].", nameof(parameters));
            float[] w = weights[wi], a = _a[mi], b = _b[mi];
            long nIn = m.In, nOut = m.Out;
            for (long o = 0; o < nOut; o++)
                for (long i = 0; i < nIn; i++)
                {
                    double d = 0;
                    for (int k = 0; k < r; k++) d += (double)b[o * r + k] * a[k * nIn + i];
                    long at = m.FanInFanOut ? i * nOut + o : o * nIn + i;                  // (in, out) or (out, in)
                    w[at] = (float)(w[at] + scale * d);
                }
        }
    }
}
