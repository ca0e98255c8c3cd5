namespace Optimum.Onnx;

/// <summary>Mixed-precision versions of model definitions (the graph builder's <see cref="GraphBuilder.Autocast"/>).</summary>
public static class MixedPrecision
{
    /// <summary>
    /// <paramref name="define"/> with its MatMul and Gemm computing in <paramref name="type"/> (Float16 or BFloat16):
    /// autocast is on while the definition builds, off afterwards, so the backward pass autodiff adds is shaped by the
    /// forward's casts alone (a matrix product's gradients are products of the same low-precision operands).
    /// </summary>
    public static Func<GraphBuilder, bool, ModelOutputs> Apply(Func<GraphBuilder, bool, ModelOutputs> define, DType type)
    {
        if (type is not (DType.Float16 or DType.BFloat16)) throw new ArgumentException($"Mixed precision computes in float16 or bfloat16, got {type.Name()}.", nameof(type));
        return (g, training) =>
        {
            var before = g.Autocast;
            g.Autocast = type;
            try { return define(g, training); }
            finally { g.Autocast = before; }
        };
    }
}
