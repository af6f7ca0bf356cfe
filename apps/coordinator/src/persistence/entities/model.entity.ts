import { Column, Entity, PrimaryColumn } from 'typeorm';

/** Weight blobs, content-addressed by SHA-256: a model is never stored twice. */
@Entity({ name: 'models' })
export class ModelEntity {
  @PrimaryColumn({ type: 'text' }) hash!: string;
  @Column({ type: 'bytea' }) data!: Uint8Array;
  @Column({ name: 'parameter_count', type: 'integer' }) parameterCount!: number;
  @Column({ name: 'byte_length', type: 'integer' }) byteLength!: number;
  @Column({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
}
