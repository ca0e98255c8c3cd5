namespace Optimum.Core;

/// <summary>Graph input names that the model definitions write and the sessions running them bind.</summary>
public static class GraphInputs
{
    /// <summary>The optional per-step dropout seed (int64 scalar) of graphs with seeded counter-hash dropout masks.</summary>
    public const string DropoutSeed = "dropout_seed";
    /// <summary>
    /// The loss scale (float32 scalar) of fp16 training graphs: the backward pass starts from it instead of 1, so every
    /// gradient output is the true gradient times the scale (dynamic loss scaling); the <c>loss</c> output is unscaled.
    /// </summary>
    public const string LossScale = "loss_scale";
}
