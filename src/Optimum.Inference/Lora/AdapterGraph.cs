using System.Runtime.InteropServices;
using Google.Protobuf;
using Optimum.Core;
using Optimum.Onnx.Lora;
using Optimum.Onnx.Proto;
using Optimum.Hub.Lora;

namespace Optimum.Inference.Lora;

/// <summary>
/// LoRA on an exported inference graph (an ONNX model proto, e.g. a model folder's KV-cache decoder), so an adapter can be
/// served over a base without rebuilding the kind's graph: every linear layer (MatMul or Gemm whose weight is a 2-D parameter
/// <c>&lt;module&gt;.weight</c>, directly (HF Conv1D, (in, out)) or through a Transpose (nn.Linear, (out, in))) whose module
/// matches the adapter's target_modules gets <c>y + (x Aᵀ)(scaling · Bᵀ)</c>, with Aᵀ and scaling · Bᵀ as the graph's own
/// (small) initializers. The base weights are left as they are: graph inputs, to be supplied by the caller.
/// </summary>
public static class AdapterGraph
{
    private sealed record Use(NodeProto Node, string Module, string X);

    /// <summary>
    /// The linear layers of <paramref name="graph"/> over <paramref name="parameters"/> that <paramref name="config"/> targets,
    /// in order of first use, as <see cref="LoraGraph.Modules"/> lists them for a graph built with LoRA. A target that matches
    /// no linear layer, or matches a weight used otherwise (an embedding), is refused naming it.
    /// </summary>
    public static IReadOnlyList<LoraModule> Modules(GraphProto graph, IReadOnlyList<ParameterInfo> parameters, LoraConfig config, string source) =>
        Find(graph, parameters, config, source).Modules;

    /// <summary>Adds <paramref name="adapter"/>'s branches to <paramref name="model"/> in place (its modules must be <see cref="Modules"/> of the graph).</summary>
    public static void Apply(ModelProto model, IReadOnlyList<ParameterInfo> parameters, LoraAdapter adapter, string source)
    {
        var graph = model.Graph;
        var (modules, uses) = Find(graph, parameters, adapter.Config, source);
        var index = adapter.Modules.Select((m, i) => (m.Name, i)).ToDictionary(x => x.Name, x => x.i, StringComparer.Ordinal);
        foreach (var m in modules)
            if (!index.TryGetValue(m.Name, out var i) || adapter.Modules[i] != m)
                throw new InvalidDataException($"{source}: the adapter's module {(index.TryGetValue(m.Name, out var j) ? adapter.Modules[j].ToString() : $"'{m.Name}' is missing; it")} does not fit the graph's {m}.");
        int r = adapter.Config.R;
        float scaling = (float)adapter.Config.Scaling;
        foreach (var m in modules)
        {
            int i = index[m.Name];
            float[] a = adapter.A(i), b = adapter.B(i);
            var at = new float[a.Length];                                                   // Aᵀ (in, r)
            for (int k = 0; k < r; k++) for (long c = 0; c < m.In; c++) at[c * r + k] = a[k * m.In + c];
            var bt = new float[b.Length];                                                   // scaling · Bᵀ (r, out)
            for (long o = 0; o < m.Out; o++) for (int k = 0; k < r; k++) bt[k * m.Out + o] = scaling * b[o * r + k];
            graph.Initializer.Add(Tensor(ANameT(m), [m.In, r], at));
            graph.Initializer.Add(Tensor(BNameT(m), [r, m.Out], bt));
        }
        var byNode = uses.ToDictionary(u => u.Node);
        var nodes = new List<NodeProto>(graph.Node.Count + 3 * uses.Count);
        foreach (var n in graph.Node)
        {
            nodes.Add(n);
            if (!byNode.TryGetValue(n, out var u)) continue;
            var m = modules.First(x => x.Name == u.Module);
            string y = n.Output[0], yBase = y + "/lora.base", ya = y + "/lora.a", yb = y + "/lora.b";
            n.Output[0] = yBase;
            nodes.Add(Node("MatMul", y + "/lora.MatMulA", [u.X, ANameT(m)], ya));
            nodes.Add(Node("MatMul", y + "/lora.MatMulB", [ya, BNameT(m)], yb));
            nodes.Add(Node("Add", y + "/lora.Add", [yBase, yb], y));
        }
        graph.Node.Clear();
        graph.Node.AddRange(nodes);
    }

    private static string ANameT(LoraModule m) => m.AName + ".T";
    private static string BNameT(LoraModule m) => m.BName + ".T.scaled";

    private static (IReadOnlyList<LoraModule> Modules, IReadOnlyList<Use> Uses) Find(GraphProto graph, IReadOnlyList<ParameterInfo> parameters, LoraConfig config, string source)
    {
        var weights = parameters.Where(p => p.Shape.Length == 2 && p.Name.EndsWith(".weight", StringComparison.Ordinal))
            .ToDictionary(p => p.Name, StringComparer.Ordinal);
        var transposeOf = new Dictionary<string, string>(StringComparer.Ordinal);              // output of Transpose(W) -> W
        foreach (var n in graph.Node)
            if (n.OpType == "Transpose" && n.Input.Count == 1 && weights.ContainsKey(n.Input[0])
                && n.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints.ToArray() is null or [1, 0])
                transposeOf[n.Output[0]] = n.Input[0];
        var modules = new List<LoraModule>();
        var linears = new List<string>();
        var uses = new List<Use>();
        var linearNodes = new HashSet<NodeProto>();
        foreach (var n in graph.Node)
        {
            if (n.OpType is not ("MatMul" or "Gemm") || n.Input.Count < 2) continue;
            bool gemmTransB = n.OpType == "Gemm" && n.Attribute.Any(a => a.Name == "transB" && a.I != 0);
            if (n.OpType == "Gemm" && (n.Attribute.Any(a => a.Name == "transA" && a.I != 0) || n.Attribute.Any(a => a.Name == "alpha" && a.F != 1f))) continue;
            string wName; bool fanInFanOut;
            if (weights.ContainsKey(n.Input[1])) (wName, fanInFanOut) = (n.Input[1], !gemmTransB);
            else if (transposeOf.TryGetValue(n.Input[1], out var tw) && !gemmTransB) (wName, fanInFanOut) = (tw, false);
            else continue;
            var module = wName[..^".weight".Length];
            linearNodes.Add(n);
            if (!linears.Contains(module)) linears.Add(module);
            if (!config.Matches(module)) continue;
            var shape = weights[wName].Shape;
            var m = new LoraModule(module, fanInFanOut ? shape[0] : shape[1], fanInFanOut ? shape[1] : shape[0], fanInFanOut);
            if (!modules.Any(x => x.Name == module)) modules.Add(m);
            uses.Add(new Use(n, module, n.Input[0]));
        }
        string Targets() => config.TargetModulesRegex is { } re ? $"'{re}' (regex)" : "[" + string.Join(", ", config.TargetModules) + "]";
        foreach (var (name, w) in weights)
        {
            var module = name[..^".weight".Length];
            if (!config.Matches(module)) continue;
            var other = graph.Node.FirstOrDefault(n => n.Input.Contains(name) && !linearNodes.Contains(n) && !(n.OpType == "Transpose" && transposeOf.ContainsValue(name)));
            if (other is not null)
                throw new NotSupportedException($"{source}: LoRA target {Targets()} matches module '{module}', whose weight [{string.Join(", ", w.Shape)}] is used by {other.OpType} node '{other.Name}'; " +
                    "only linear layers (MatMul or Gemm with a 2-D weight) can be adapted" + (other.OpType == "Gather" ? " (LoRA of embeddings is not supported)." : "."));
        }
        if (modules.Count == 0)
            throw new InvalidDataException($"{source}: LoRA target_modules {Targets()} match no linear layer of the base model. Its linear layers: {string.Join(", ", linears.Take(12))}{(linears.Count > 12 ? $", ... ({linears.Count})" : "")}.");
        return (modules, uses);
    }

    private static NodeProto Node(string op, string name, string[] inputs, string output)
    {
        var n = new NodeProto { OpType = op, Name = name };
        n.Input.AddRange(inputs);
        n.Output.Add(output);
        return n;
    }

    private static TensorProto Tensor(string name, long[] shape, float[] values)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan())) };
        t.Dims.AddRange(shape);
        return t;
    }
}
