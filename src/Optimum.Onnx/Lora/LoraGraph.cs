using System.Text.Json.Nodes;
using Optimum.Core;

namespace Optimum.Onnx.Lora;

/// <summary>
/// LoRA as a graph transformation, for any model definition: while a definition builds, every linear layer it
/// applies (see <see cref="LinearUse"/>) whose module name matches the config's target_modules gets
/// <c>y + scaling · (dropout(x) Aᵀ) Bᵀ</c>, with new parameters <c>&lt;module&gt;.lora_A.weight</c> (r, in) and
/// <c>&lt;module&gt;.lora_B.weight</c> (out, r), PEFT's names. The base weights stay ordinary parameters; which ones
/// train is the trainer's choice (a LoRA run freezes all but <see cref="LoraModule.AName"/> / <see cref="LoraModule.BName"/>).
/// The adapted modules are recorded in the graph's metadata (<see cref="MetadataKey"/>), read back by <see cref="Modules"/>.
/// </summary>
public static class LoraGraph
{
    /// <summary>Metadata key of the adapted modules (JSON: r, lora_alpha, scaling, modules with in/out/layout).</summary>
    public const string MetadataKey = "peft.lora";
    /// <summary>Salt of the first LoRA dropout mask; use k of a linear layer has salt base + k (far from the models' own salts).</summary>
    public const long DropoutSaltBase = 1 << 20;

    /// <summary>The definition <paramref name="define"/> with LoRA on its target modules (training and eval graphs alike).</summary>
    public static Func<GraphBuilder, bool, ModelOutputs> Apply(Func<GraphBuilder, bool, ModelOutputs> define, LoraConfig config)
    {
        config.Validate();
        return (g, training) => Build(g, config, training, () => define(g, training));
    }

    /// <summary>
    /// Runs <paramref name="build"/> (which adds a model to <paramref name="g"/>) with LoRA on its target modules, for graphs
    /// not made by a <see cref="ModelOutputs"/> definition, such as an inference decoder:
    /// <c>LoraGraph.Build(g, cfg, false, () =&gt; Gpt2.DefineDecoder(g, c))</c>. Afterwards checks that some module matched and
    /// that every matched module is a linear layer, and records the modules in the graph's metadata.
    /// </summary>
    public static void Build(GraphBuilder g, LoraConfig config, bool training, Action build) =>
        Build(g, config, training, () => { build(); return 0; });

    /// <summary>As <see cref="Build(GraphBuilder, LoraConfig, bool, Action)"/>, returning what <paramref name="build"/> returns.</summary>
    public static T Build<T>(GraphBuilder g, LoraConfig config, bool training, Func<T> build)
    {
        config.Validate();
        if (g.LinearRewrite is not null) throw new GraphBuildException($"Graph '{g.Name}' already rewrites its linear layers; LoRA cannot be applied twice.");
        var scope = new Scope(g, config, training);
        g.LinearRewrite = scope.Rewrite;
        T result;
        try { result = build(); }
        finally { g.LinearRewrite = null; }
        scope.Complete();
        return result;
    }

    /// <summary>The LoRA modules of a graph built with <see cref="Apply"/> or <see cref="Build(GraphBuilder, LoraConfig, bool, Action)"/> (empty for a graph without LoRA), in order of first use.</summary>
    public static IReadOnlyList<LoraModule> Modules(GraphBuilder g)
    {
        if (!g.Metadata.TryGetValue(MetadataKey, out var json)) return [];
        var doc = JsonNode.Parse(json)!;
        return doc["modules"]!.AsArray().Select(m => new LoraModule(
            (string)m!["name"]!, (long)m["in"]!, (long)m["out"]!, (bool)m["fan_in_fan_out"]!)).ToArray();
    }

    /// <summary>
    /// The parameters a LoRA run keeps fixed: every trainable parameter of <paramref name="g"/> but the modules' A and B
    /// (the frozen set for the trainer; biases stay frozen, PEFT's bias "none").
    /// </summary>
    public static IReadOnlyList<string> FrozenParameters(GraphBuilder g)
    {
        var lora = Modules(g).SelectMany(m => new[] { m.AName, m.BName }).ToHashSet(StringComparer.Ordinal);
        return g.TrainableParameters.Select(p => p.Name).Where(n => !lora.Contains(n)).ToArray();
    }

    private sealed class Scope(GraphBuilder g, LoraConfig config, bool training)
    {
        private readonly Dictionary<string, (Value A, Value B)> _adapted = new(StringComparer.Ordinal);
        private readonly List<LoraModule> _modules = [];
        private readonly List<string> _linears = [];
        private int _uses;
        private Value? _seed;

        public Value Rewrite(LinearUse use, Value y)
        {
            if (!_linears.Contains(use.Module)) _linears.Add(use.Module);
            if (!config.Matches(use.Module)) return y;
            if (!_adapted.TryGetValue(use.Module, out var p))
            {
                var m = new LoraModule(use.Module, use.In, use.Out, use.FanInFanOut);
                p = (g.Parameter(m.AName, Shape.Of(config.R, m.In), use.Weight.Type), g.Parameter(m.BName, Shape.Of(m.Out, config.R), use.Weight.Type));
                _adapted[use.Module] = p;
                _modules.Add(m);
            }
            var x = use.Input;                                                                   // (..., in)
            if (training && config.LoraDropout > 0)
                x = g.Dropout(x, config.LoraDropout, training: true, _seed ??= DropoutSeed(), DropoutSaltBase + _uses);
            _uses++;
            using (g.Scope(use.Module + ".lora"))
            {
                var h = g.MatMul(g.MatMul(x, g.Transpose(p.A)), g.Transpose(p.B));                 // (..., r) then (..., out)
                return y + h * config.Scaling;
            }
        }

        // The models declare the seed first when they have dropout of their own; LoRA shares it or declares it.
        private Value DropoutSeed() => g.Inputs.FirstOrDefault(v => v.Name == GraphInputs.DropoutSeed)
            ?? g.Input(GraphInputs.DropoutSeed, DType.Int64, Shape.Scalar);

        public void Complete()
        {
            Check();
            var modules = new JsonArray(_modules.Select(m => (JsonNode)new JsonObject
            {
                ["name"] = m.Name, ["in"] = m.In, ["out"] = m.Out, ["fan_in_fan_out"] = m.FanInFanOut,
            }).ToArray());
            g.Metadata[MetadataKey] = new JsonObject
            {
                ["r"] = config.R,
                ["lora_alpha"] = config.LoraAlpha,
                ["scaling"] = config.Scaling,
                ["modules"] = modules,
            }.ToJsonString();
        }

        private string Targets => config.TargetModulesRegex is { } re ? $"'{re}' (regex)" : "[" + string.Join(", ", config.TargetModules) + "]";

        private void Check()
        {
            // PEFT refuses a target that names a module it has no LoRA layer for; here: a matched weight that is not a linear layer's.
            var own = _adapted.Values.SelectMany(p => new[] { p.A, p.B }).ToHashSet();
            foreach (var w in g.Parameters.Where(p => p.Name.EndsWith(".weight", StringComparison.Ordinal) && !own.Contains(p)))
            {
                var module = w.Name[..^".weight".Length];
                if (!config.Matches(module)) continue;
                // A mixed-precision graph (GraphBuilder.Autocast) casts the weight first: the cast's users are the weight's.
                Node[] Users(Value v) => g.Nodes.Where(n => n.Inputs.Contains(v)).ToArray();
                var users = Users(w).SelectMany(n => n.OpType == "Cast" ? Users(n.Outputs[0]) : [n]).ToArray();
                var other = users.FirstOrDefault(n => n.OpType is not ("MatMul" or "Gemm" or "Transpose"));
                if (other is not null || (!_adapted.ContainsKey(module) && users.Length > 0))
                {
                    var by = other ?? users[0];
                    throw new NotSupportedException(
                        $"LoRA target {Targets} matches module '{module}' of graph '{g.Name}', but its weight {w.Shape} is used by {by}; " +
                        "only linear layers (MatMul or Gemm with a 2-D weight) can be adapted" +
                        (by.OpType == "Conv" ? " (LoRA of convolutions is not supported)." : by.OpType == "Gather" ? " (LoRA of embeddings is not supported)." : "."));
                }
            }
            if (_modules.Count == 0)
                throw new GraphBuildException(
                    $"LoRA target_modules {Targets} not found in graph '{g.Name}'. Its linear layers: {string.Join(", ", _linears.Take(12))}{(_linears.Count > 12 ? $", ... ({_linears.Count})" : "")}.");
        }
    }

}
