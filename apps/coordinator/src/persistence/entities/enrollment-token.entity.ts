import { Column, Entity, PrimaryColumn } from 'typeorm';

/** An enrollment token an administrator issued for a site id: only its SHA-256 is kept. */
@Entity({ name: 'enrollment_tokens' })
export class EnrollmentTokenEntity {
  @PrimaryColumn({ name: 'site_id', type: 'text' }) siteId!: string;
  @Column({ name: 'token_sha256', type: 'text' }) tokenSha256!: string;
  @Column({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @Column({ name: 'expires_at', type: 'timestamptz' }) expiresAt!: Date;
}
