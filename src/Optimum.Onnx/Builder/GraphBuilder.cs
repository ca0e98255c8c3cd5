using System.Globalization;

namespace Optimum.Onnx;

/// <summary>Thrown when a graph cannot be built: shape or type mismatches, bad names, bad attributes.</summary>
public sealed class GraphBuildException(string message) : InvalidOperationException(message);

/// <summary>
/// Builds an ONNX graph op by op, inferring element types and (symbolic) shapes as it goes, so a
/// mismatch fails at build time naming the op, the node and the shapes. The builder is also the
/// graph itself: <see cref="ModelWriter"/> serialises it and <see cref="ModelReader"/> recreates it.
/// Names are derived from a per-builder counter and the scope stack, so the same build code gives
/// the same names (and bytes) every time.
/// </summary>
public sealed partial class GraphBuilder
{
    private readonly List<Value> _inputs = [];
    private readonly List<Value> _constants = [];
    private readonly List<Node> _nodes = [];
    private readonly List<Value> _outputs = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Value> _constantCache = new(StringComparer.Ordinal);
    private readonly Stack<string> _scopes = new();
    private int _counter;
    private int _fresh;

    /// <param name="name">Graph name written to the model.</param>
    public GraphBuilder(string name = "main") => Name = name;

    public string Name { get; }
    /// <summary>Model metadata written as <c>metadata_props</c> (sorted by key).</summary>
    public SortedDictionary<string, string> Metadata { get; } = new(StringComparer.Ordinal);
    /// <summary>The model's doc string.</summary>
    public string DocString { get; set; } = "";
    /// <summary>The ai.onnx opset the graph imports: <see cref="OnnxVersions.Opset"/>, raised to <see cref="OnnxVersions.GeluOpset"/> by a Gelu.</summary>
    public long Opset { get; set; } = OnnxVersions.Opset;
    /// <summary>Opset versions of non-default domains used by <see cref="Op"/> nodes (1 when not set).</summary>
    public SortedDictionary<string, long> DomainVersions { get; } = new(StringComparer.Ordinal);
    /// <summary>Graph inputs, parameters included, in declaration order.</summary>
    public IReadOnlyList<Value> Inputs => _inputs;
    /// <summary>Parameters (weights fed as graph inputs: trainable ones and buffers) in declaration order.</summary>
    public IReadOnlyList<Value> Parameters => _inputs.Where(v => v.Kind == ValueKind.Parameter).ToList();
    /// <summary>The parameters gradients are taken for (buffers excluded), in declaration order.</summary>
    public IReadOnlyList<Value> TrainableParameters => _inputs.Where(v => v.Kind == ValueKind.Parameter && !_buffers.Contains(v.Name)).ToList();
    /// <summary>True for a buffer: a weight stored with the parameters that the optimizer does not touch.</summary>
    public bool IsBuffer(Value v) => v.Kind == ValueKind.Parameter && _buffers.Contains(v.Name);
    public IReadOnlyList<Value> Constants => _constants;
    /// <summary>Nodes in topological (insertion) order.</summary>
    public IReadOnlyList<Node> Nodes => _nodes;
    public IReadOnlyList<Value> Outputs => _outputs;

    /// <summary>Declares a graph input (data fed per run).</summary>
    public Value Input(string name, DType type, Shape shape) => AddInput(name, type, shape, ValueKind.Input);

    /// <summary>Declares a trainable parameter: a graph input that gradients can be taken for.</summary>
    public Value Parameter(string name, Shape shape, DType type = DType.Float) => AddInput(name, type, shape, ValueKind.Parameter);

    /// <summary>
    /// Declares a buffer: stored and loaded with the parameters (HF name, model.safetensors, checkpoints) but
    /// not trained, such as BatchNorm running statistics or fixed sinusoidal position tables. The training
    /// graph may output a new value for it (see <see cref="ModelOutputs.Updates"/>).
    /// </summary>
    public Value Buffer(string name, Shape shape, DType type = DType.Float)
    {
        var v = AddInput(name, type, shape, ValueKind.Parameter);
        _buffers.Add(v.Name);
        return v;
    }

    private readonly HashSet<string> _buffers = new(StringComparer.Ordinal);

    private Value AddInput(string name, DType type, Shape shape, ValueKind kind)
    {
        if (shape.Any(d => d.IsStatic && d.Value < 0))
            throw new GraphBuildException($"Input '{name}' has a negative dimension in {shape}.");
        var v = new Value(this, Reserve(name), type, shape, kind);
        _inputs.Add(v);
        return v;
    }

    /// <summary>Adds a constant tensor (written as an initializer).</summary>
    public Value Constant(TensorData data, string? name = null)
    {
        var v = new Value(this, Reserve(name ?? NextName("const")), data.Type, new Shape(data.Dims.Select(Dim.Of)), ValueKind.Constant) { Data = data };
        if (data.Type is DType.Int64 or DType.Int32 && data.Count <= 64)
            v.Known = data.ToInt64s().Select(Dim.Of).ToArray();
        _constants.Add(v);
        return v;
    }

    /// <summary>A scalar constant of <paramref name="type"/>; identical scalars are shared.</summary>
    public Value Scalar(double value, DType type = DType.Float) =>
        Cached($"s:{type}:{value.ToString("R", CultureInfo.InvariantCulture)}", () => TensorData.FromNumbers(type, [value]));

    /// <summary>A 1-D int64 constant (axes, shapes, indices); identical ones are shared.</summary>
    public Value Ints(params long[] values) =>
        Cached("i:" + string.Join(",", values), () => TensorData.FromInt64s(values, values.Length));

    private Value Cached(string key, Func<TensorData> make)
    {
        if (!_constantCache.TryGetValue(key, out var v))
            _constantCache[key] = v = Constant(make());
        return v;
    }

    /// <summary>Marks <paramref name="value"/> as a graph output named <paramref name="name"/> (an Identity is added when the names differ).</summary>
    public Value Output(Value value, string? name = null)
    {
        Own(value, "Output");
        if (name is not null && name != value.Name) value = Identity(value, name);
        if (_outputs.Contains(value))
            throw new GraphBuildException($"Value '{value.Name}' is already a graph output.");
        _outputs.Add(value);
        return value;
    }

    /// <summary>Prefixes the names of nodes added until the result is disposed: <c>using (g.Scope("h.0.attn")) ...</c>.</summary>
    public IDisposable Scope(string name)
    {
        _scopes.Push(name);
        return new PopScope(_scopes);
    }

    private sealed class PopScope(Stack<string> s) : IDisposable
    {
        private bool _done;
        public void Dispose() { if (!_done) { s.Pop(); _done = true; } }
    }

    private string NextName(string op)
    {
        var prefix = _scopes.Count == 0 ? "" : string.Join("/", _scopes.Reverse()) + "/";
        string name;
        do name = $"{prefix}{op}_{_counter++}"; while (_names.Contains(name));
        return name;
    }

    private string Reserve(string name)
    {
        if (string.IsNullOrEmpty(name)) throw new GraphBuildException("A value name cannot be empty.");
        if (!_names.Add(name)) throw new GraphBuildException($"Duplicate name '{name}' in graph '{Name}'.");
        return name;
    }

    internal void Own(Value? v, string op)
    {
        if (v is not null && !ReferenceEquals(v.Graph, this))
            throw new GraphBuildException($"Value '{v.Name}' belongs to another graph and cannot be used in {op} of graph '{Name}'.");
    }

    /// <summary>
    /// Adds a node. <paramref name="infer"/> gets the node's name (for messages) and returns the
    /// output types and shapes; it runs before anything is added, so a failed inference leaves the graph unchanged.
    /// </summary>
    internal Value[] Emit(string op, Value?[] inputs, Dictionary<string, AttrValue>? attrs,
        Func<string, (DType Type, Shape Shape)[]> infer, string? outputName = null, string domain = "")
    {
        foreach (var i in inputs) Own(i, op);
        var name = NextName(op);
        // Sizes inference cannot express get a fresh symbol, so values derived from them (through
        // Shape, Reshape, ...) still compare equal and gradients can undo broadcasting exactly.
        var specs = infer(name).Select(s => (Type: s.Type, Shape: s.Shape.All(d => d.IsKnown) ? s.Shape
            : new Shape(s.Shape.Select(d => d.IsKnown ? d : Dim.Sym($"?{_fresh++}"))))).ToArray();
        var node = new Node(op, name, inputs, attrs ?? []) { Domain = domain };
        var outs = new Value[specs.Length];
        for (int i = 0; i < specs.Length; i++)
        {
            var vname = outputName is not null && i == 0 ? outputName : specs.Length == 1 ? name : $"{name}:{i}";
            outs[i] = new Value(this, Reserve(vname), specs[i].Type, specs[i].Shape, ValueKind.Intermediate) { Producer = node, OutputIndex = i };
        }
        _names.Add(name);
        node.Outputs = outs;
        _nodes.Add(node);
        return outs;
    }

    /// <summary>
    /// Adds any operator the builder has no method for, with the output types and shapes given by
    /// the caller (nothing is inferred). Autodiff refuses it unless a rule for its op type exists.
    /// </summary>
    public Value[] Op(string opType, Value?[] inputs, (DType Type, Shape Shape)[] outputs,
        IDictionary<string, AttrValue>? attributes = null, string domain = "")
    {
        if (string.IsNullOrWhiteSpace(opType)) throw new GraphBuildException("An op type cannot be empty.");
        if (outputs.Length == 0) throw new GraphBuildException($"{opType} needs at least one output.");
        return Emit(opType, inputs, attributes is null ? null : new Dictionary<string, AttrValue>(attributes), _ => outputs, domain: domain);
    }

    /// <summary>Adds an already-built node (used by <see cref="ModelReader"/>).</summary>
    internal Value[] AddRaw(string op, string name, string domain, Value?[] inputs, Dictionary<string, AttrValue> attrs,
        (string Name, DType Type, Shape Shape)[] outputs)
    {
        var node = new Node(op, name, inputs, attrs) { Domain = domain };
        var outs = outputs.Select((o, i) => new Value(this, Reserve(o.Name), o.Type, o.Shape, ValueKind.Intermediate) { Producer = node, OutputIndex = i }).ToArray();
        _names.Add(name);
        // Made-up dims read back must not collide with the ones this builder makes up next.
        foreach (var d in outputs.SelectMany(o => o.Shape).Where(d => d.IsAnonymous))
            foreach (var part in d.ToString().Split('*').Where(p => p.StartsWith('?')))
                if (int.TryParse(part.AsSpan(1), out var k)) _fresh = Math.Max(_fresh, k + 1);
        node.Outputs = outs;
        _nodes.Add(node);
        return outs;
    }

    internal static GraphBuildException Error(string op, string node, string message) =>
        new($"{message} in {op} (node '{node}')");
}
