namespace Optimum.Onnx;

/// <summary>
/// One use of a linear layer as the builder saw it: <c>y = x·Wᵀ</c> (nn.Linear, W stored (out, in): MatMul(x, Transpose(W))
/// or Gemm with transB) or <c>y = x·W</c> (HF's Conv1D, W stored (in, out): MatMul(x, W) or Gemm without transB),
/// W being a 2-D parameter named <c>&lt;Module&gt;.weight</c>.
/// </summary>
/// <param name="Module">The weight's name without <c>.weight</c> (the torch module name).</param>
/// <param name="Input">x, (..., In).</param>
/// <param name="Weight">The parameter W.</param>
/// <param name="FanInFanOut">True when W is stored (in, out) (PEFT's <c>fan_in_fan_out</c>).</param>
/// <param name="In">Input features.</param>
/// <param name="Out">Output features.</param>
public sealed record LinearUse(string Module, Value Input, Value Weight, bool FanInFanOut, long In, long Out);

public sealed partial class GraphBuilder
{
    private const string WeightSuffix = ".weight";
    private bool _rewriting;

    /// <summary>
    /// Called after each MatMul or Gemm that applies a linear layer (see <see cref="LinearUse"/>) with the use and the
    /// op's output; what it returns is used in place of the output. Nodes it adds are not offered to it again.
    /// Set it before a model definition runs to rewrite every linear layer the definition builds, e.g. LoRA.
    /// </summary>
    public Func<LinearUse, Value, Value>? LinearRewrite { get; set; }

    private Value AfterLinear(Value a, Value b, bool? gemmTransB, Value y, bool transA = false)
    {
        if (LinearRewrite is not { } rewrite || _rewriting) return y;
        // MatMul(x, W): Conv1D layout; MatMul(x, Transpose(W)): nn.Linear; Gemm says which with transB.
        Value? w = null;
        bool fanInFanOut = false;
        if (b.Kind == ValueKind.Parameter) (w, fanInFanOut) = (b, gemmTransB != true);
        else if (gemmTransB is null && b.Producer is { OpType: "Transpose" } t && t.Input(0) is { Kind: ValueKind.Parameter, Rank: 2 } tw
                 && (t.GetInts("perm") is null or [1, 0])) (w, fanInFanOut) = (tw, false);
        if (w is null || w.Rank != 2 || !w.Name.EndsWith(WeightSuffix, StringComparison.Ordinal) || !w.Shape.IsStatic) return y;
        long rows = w.Shape[0].Value, cols = w.Shape[1].Value;
        _rewriting = true;
        try
        {
            var x = transA ? Transpose(a) : a;
            var use = new LinearUse(w.Name[..^WeightSuffix.Length], x, w, fanInFanOut, fanInFanOut ? rows : cols, fanInFanOut ? cols : rows);
            var r = rewrite(use, y);
            Own(r, "LinearRewrite");
            if (r.Type != y.Type || r.Rank != y.Rank)
                throw new GraphBuildException($"{nameof(LinearRewrite)} of '{use.Module}' returned {r}, the layer's output is {y}.");
            return r;
        }
        finally { _rewriting = false; }
    }
}
