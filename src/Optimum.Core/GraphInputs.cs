namespace Optimum.Core;

/// <summary>Graph input names that the model definitions write and the sessions running them bind.</summary>
public static class GraphInputs
{
    /// <summary>The optional per-step dropout seed (int64 scalar) of graphs with seeded counter-hash dropout masks.</summary>
    public const string DropoutSeed = "dropout_seed";
}
